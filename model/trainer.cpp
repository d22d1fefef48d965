// The training loop: fit / evaluate / predict (see trainer.hpp).
#include "mirror/model/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>

#include "mirror/engine/error.hpp"
#include "mirror/engine/progress.hpp"

namespace mirror {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::ostream& out_or_cout(std::ostream* out) { return out ? *out : std::cout; }

// How often the loop reads the device's running totals (progress and the NaN check).
constexpr auto kReadInterval = std::chrono::milliseconds(100);

std::vector<int32_t> identity_order(int64_t count) {
  std::vector<int32_t> order(static_cast<size_t>(count));
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
  return order;
}

// Runs `fn` when the scope ends, however it ends.
template <typename Fn>
struct ScopeExit {
  Fn fn;
  ~ScopeExit() { fn(); }
};
template <typename Fn>
ScopeExit(Fn) -> ScopeExit<Fn>;

double value_of(const MetricValues& values, const std::string& name) {
  for (const auto& [key, value] : values)
    if (key == name) return value;
  return 0.0;
}

bool has_value(const MetricValues& values, const std::string& name) {
  return std::any_of(values.begin(), values.end(), [&](const auto& kv) { return kv.first == name; });
}

// Spans a traced fit keeps per lane at most (32 bytes each): past them, spans are dropped.
constexpr size_t kMaxTraceSpansPerLane = size_t{1} << 20;

size_t bucket_floats(const FitOptions& o) { return std::max<size_t>(1, o.gradient_bucket_bytes / sizeof(float)); }

// A fit's trace file (FitOptions::trace): checked when fit starts, written when it ends, however it
// ends (an interrupted fit's trace shows the steps it ran).
class TraceFile {
 public:
  TraceFile(Strategy& strategy, std::string path) : strategy_(strategy), path_(std::move(path)) {
    const std::ofstream probe(path_, std::ios::app);
    MIRROR_REQUIRE(probe.good(), InvalidArgument, "cannot write the trace to '", path_,
                   "': check that its directory exists and is writable");
  }
  ~TraceFile() {
    if (!strategy_.tracer().enabled()) return;
    try {
      finish();
    } catch (...) {  // an exception is already on its way out of fit
    }
  }
  TraceFile(const TraceFile&) = delete;
  TraceFile& operator=(const TraceFile&) = delete;

  void start(size_t spans_per_lane) { strategy_.start_tracing(spans_per_lane); }
  void finish() {
    strategy_.tracer().stop();
    strategy_.tracer().write_chrome_trace(path_);
  }

 private:
  Strategy& strategy_;
  std::string path_;
};

// Keras's verbose values ("auto" is 1 here, the default).
void check_verbose(int verbose) {
  MIRROR_REQUIRE(verbose >= 0 && verbose <= 2, InvalidArgument,
                 "verbose must be 0 (silent), 1 (progress bar) or 2 (one line per epoch), got ", verbose);
}

}  // namespace

void Trainer::check_data(const ImageSet& data, const char* what, bool labels) const {
  MIRROR_REQUIRE(data.count > 0, DataError, "the ", what, " is empty");
  MIRROR_REQUIRE(static_cast<int64_t>(data.pixels.size()) == data.count * data.sample_size() &&
                     static_cast<int64_t>(data.labels.size()) == data.count,
                 DataError, "the ", what, " is inconsistent: ", data.count, " samples of ", data.sample_shape(), " but ",
                 data.pixels.size(), " pixels and ", data.labels.size(), " labels");
  const Shape& expected = runtime_.plan().input_shape;
  MIRROR_REQUIRE(data.sample_shape() == expected, DataError, "the model expects inputs of shape ", expected, " but the ",
                 what, " has images of shape ", data.sample_shape());
  if (labels) runtime_.loss().check_labels(data, runtime_.output_width(), what);
}

MetricValues Trainer::metric_names() const {
  MetricValues values{{"loss", 0.0}};
  for (const Metric& m : runtime_.metrics()) values.push_back({m.name(), 0.0});
  return values;
}

MetricValues Trainer::means(int64_t seen) const {
  MetricValues values = metric_names();
  means(seen, values);
  return values;
}

void Trainer::means(int64_t seen, MetricValues& values) const {
  const std::vector<float>& totals = runtime_.host_totals();
  for (size_t i = 0; i < values.size(); ++i) values[i].second = totals[i] / double(seen);
}

Trainer::BatchesRun Trainer::run_batches(std::span<const int32_t> order, int64_t batch_size, int64_t first_step,
                                         int64_t steps, int64_t first_iteration, bool read_every_step,
                                         ReplicaStep replica_step, BeforeStep before, AfterStep after) {
  Strategy& strategy = runtime_.strategy();
  BatchesRun run;
  auto last_read = Clock::now();
  for (int64_t step = first_step; step < steps; ++step) {
    before(step);
    const auto batch = data::batch_indices(order, batch_size, step);
    const auto rows = static_cast<int64_t>(batch.size());
    // The host reads the running totals only now and then (on a GPU each read waits for the step).
    const bool read = read_every_step || step + 1 == steps || Clock::now() - last_read >= kReadInterval;
    const int64_t iteration = first_iteration + step;
    const StepInfo info{.global_rows = rows,
                        .iteration = iteration,
                        .learning_rate = runtime_.optimizer().learning_rate(iteration),
                        .step = step,
                        .read_totals = read};
    try {
      strategy.run([&](int r) {
        const BatchShare share = strategy.batch_share(rows, r);
        replica_step(r, batch.subspan(static_cast<size_t>(share.offset), static_cast<size_t>(share.count)),
                     share.offset, info);
      });
    } catch (...) {
      runtime_.mark_suspect();  // some replicas may have applied the update and others not
      throw;
    }
    run.seen += rows;
    run.steps = step + 1 - first_step;
    if (read) last_read = Clock::now();
    if (!after(step, run.seen, read)) {
      if (!read) runtime_.read_totals();
      break;
    }
  }
  return run;
}

struct Trainer::FitRun {
  const FitData& data;
  const FitOptions& options;
  Model& model;
  FitIdentity identity;
  BackupDir* backups = nullptr;
  const SignalCatcher& signals;
  FitProgress progress;  // where the run is; its history holds the finished epochs
  Clock::time_point last_backup = Clock::now();
};

void Trainer::write_backup(FitRun& run, int64_t iterations) {
  if (!runtime_.strategy().is_chief()) return;  // one writer; every worker reads the same backups
  saving::Checkpoint checkpoint;
  saving::capture_model(runtime_, run.model.variables(), iterations, checkpoint);
  capture_fit(run.progress, run.identity, run.options.callbacks, checkpoint);
  run.backups->write(checkpoint, iterations);
  run.last_backup = Clock::now();
}

Interrupted Trainer::interrupted(const FitRun& run, int signal, int64_t step) const {
  const std::string where = step == 0 ? str("at the end of epoch ", run.progress.epoch - 1)
                                      : str("after epoch ", run.progress.epoch, ", step ", step, "/", run.identity.steps);
  return Interrupted(signal, str("fit stopped by ", signal_name(signal), " ", where,
                                 run.backups ? str("; a backup of that step is in ", run.backups->path(),
                                                   ": run fit again with the same backup_dir to continue")
                                             : std::string("; nothing was saved (no backup_dir)")));
}

void Trainer::run_epoch(FitRun& run, EpochLog& log) {
  const FitData& data = run.data;
  const FitOptions& o = run.options;
  FitProgress& p = run.progress;
  const int epoch = p.epoch;
  const int64_t rows = data.train_rows;
  const std::vector<int32_t> samples =
      o.shuffle ? data::shuffled_indices(rows, o.seed, static_cast<uint64_t>(epoch - 1)) : identity_order(rows);
  const int64_t steps = run.identity.steps;

  std::ostream& out = out_or_cout(o.out);
  const bool bar = o.verbose >= 1;
  if (bar) out << "Epoch " << epoch << '/' << o.epochs << '\n';
  ProgressBar progress(steps, out, o.verbose == 1 && ProgressBar::is_terminal(out));
  const std::vector<float>& totals = runtime_.host_totals();
  const size_t bad_step = runtime_.stats_width();
  const int64_t first_step = p.step, seen_before = p.seen;
  if (first_step > 0) {
    runtime_.set_totals(p.totals);  // the running means go on from the backup's
  } else {
    runtime_.reset_totals();
  }
  const auto start = Clock::now() - std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(p.seconds));
  // Iterations count every step of the epoch up front: each is either applied or, after a NaN,
  // skipped as fit stops. A backup records the steps really done.
  const int64_t first_iteration = runtime_.iterations() - first_step;
  runtime_.add_iterations(steps - first_step);
  GradientReducer reducer(runtime_.plan().trainable_floats, bucket_floats(o), runtime_.strategy().num_replicas(),
                          &runtime_.strategy().tracer());
  int signal = 0;
  MetricValues logs = metric_names();  // its values set in place: a step allocates nothing
  int64_t seen_before_step = 0;
  const BatchesRun batches = run_batches(
      samples, o.batch_size, first_step, steps, first_iteration, o.verify_replicas,
      [&](int r, std::span<const int32_t> share, int64_t first_row, const StepInfo& info) {
        runtime_.train_step(r, *data.train, share, first_row, info, reducer);
      },
      [&](int64_t step) {
        for (const CallbackPtr& c : o.callbacks) c->on_train_batch_begin(step);
      },
      [&](int64_t step, int64_t seen_now, bool read) {
        times_.add(runtime_, reducer, seen_now - seen_before_step);
        seen_before_step = seen_now;
        const int64_t seen = seen_before + seen_now;
        // A signal with the epoch's last step is taken after the epoch's end (and its backup), by fit.
        signal = step + 1 < steps ? run.signals.caught() : 0;
        const bool backup =
            run.backups && step + 1 < steps &&
            (signal != 0 || (o.backup_every_steps > 0 && (first_iteration + step + 1) % o.backup_every_steps == 0) ||
             (o.backup_every_seconds > 0 && seconds_since(run.last_backup) >= o.backup_every_seconds));
        if (backup && !read) {
          runtime_.read_totals();
          read = true;
        }
        if (read) means(seen, logs);
        for (const CallbackPtr& c : o.callbacks) c->on_train_batch_end(step, read ? &logs : nullptr);
        if (read) {
          MIRROR_REQUIRE(totals[bad_step] < 0 || run.model.stop_training(), NumericalError, "the loss became ", totals[0],
                         " at epoch ", epoch, ", step ", static_cast<int64_t>(totals[bad_step]) + 1, "/", steps,
                         "; no update was applied from that step on, so the weights are those of the step before. "
                         "Lower the learning rate or check the input data (or add callbacks::TerminateOnNaN() to stop "
                         "quietly).");
          if (o.verify_replicas)
            MIRROR_REQUIRE(runtime_.replicas_identical(), Error, "replicas diverged after epoch ", epoch, " step ",
                           step + 1, ": their variables are no longer bitwise identical (a non-deterministic reduction "
                           "or a missed update)");
          if (bar) progress.update(step + 1, logs);
        }
        if (backup) {
          p.step = step + 1;
          p.seen = seen;
          p.seconds = seconds_since(start);
          p.totals = totals;
          p.stopped = run.model.stop_training();
          write_backup(run, first_iteration + step + 1);  // the steps really done
        }
        return signal == 0 && !run.model.stop_training();
      });
  if (signal != 0) {
    runtime_.set_iterations(first_iteration + first_step + batches.steps);
    if (bar) out << '\n';  // the progress line stays as it was
    throw interrupted(run, signal, first_step + batches.steps);
  }
  runtime_.add_iterations(first_step + batches.steps - steps);  // a callback stopped the epoch early
  log.epoch = epoch;
  log.values = means(seen_before + batches.seen);
  log.loss = value_of(log.values, "loss");
  log.accuracy = value_of(log.values, "accuracy");
  log.seconds = seconds_since(start);
  log.samples_per_second = double(seen_before + batches.seen) / log.seconds;
  if (data.val && epoch % o.validation_freq == 0) {
    const EvaluateResult val = evaluate_rows(*data.val, data.val_order, {.batch_size = o.batch_size, .verbose = 0});
    for (const auto& [name, value] : val.values) log.values.push_back({"val_" + name, value});
    log.val_loss = val.loss;
    if (has_value(val.values, "accuracy")) log.val_accuracy = val.accuracy;
  }
  log.values.push_back({"learning_rate", runtime_.optimizer().learning_rate(runtime_.iterations())});
  if (bar) progress.finish(log.values, str(" - ", static_cast<int64_t>(log.samples_per_second), " samples/s"));
}

Trainer::FitData Trainer::split_data(const ImageSet& train, const FitOptions& o) const {
  MIRROR_REQUIRE(o.validation_split >= 0 && o.validation_split < 1, InvalidArgument,
                 "validation_split must be in [0, 1), got ", o.validation_split);
  MIRROR_REQUIRE(!(o.validation_data && o.validation_split > 0), InvalidArgument,
                 "give validation_data or validation_split, not both");
  MIRROR_REQUIRE(o.validation_freq >= 1, InvalidArgument, "validation_freq must be >= 1, got ", o.validation_freq);
  FitData d{.train = &train, .train_rows = train.count, .val = o.validation_data, .val_order = {}};
  if (o.validation_split > 0) {
    // Keras: the last samples, taken before shuffling.
    d.train_rows = static_cast<int64_t>(std::floor(static_cast<double>(train.count) * (1.0 - o.validation_split)));
    MIRROR_REQUIRE(d.train_rows > 0 && d.train_rows < train.count, InvalidArgument, "validation_split ",
                   o.validation_split, " of ", train.count, " samples leaves ", d.train_rows,
                   " to train on and ", train.count - d.train_rows, " to validate on: both need at least one");
    d.val = &train;
    for (int64_t i = d.train_rows; i < train.count; ++i) d.val_order.push_back(static_cast<int32_t>(i));
  } else if (d.val) {
    d.val_order = identity_order(d.val->count);
  }
  return d;
}

namespace {

// What every worker of a multi-worker job must share for its replicas to be one model: the paths
// and shapes of the variables, as a count and a hash short enough for an error message.
std::string model_fingerprint(const Model& model) {
  uint64_t hash = 0xcbf29ce484222325ull;
  int64_t floats = 0;
  const std::vector<VariableInfo> variables = model.variables();
  for (const VariableInfo& v : variables) {
    for (const char c : str(v.path, ' ', v.shape, v.trainable ? " t;" : " f;"))
      hash = (hash ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
    floats += v.shape.count();
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
  return str(variables.size(), " variables of ", floats, " floats (layout hash ", hex, ")");
}

}  // namespace

History Trainer::fit(const ImageSet& train, const FitOptions& given, Model& model) {
  // Only the chief of a multi-worker job prints; the others train silently.
  const bool chief = runtime_.strategy().is_chief();
  FitOptions quiet;
  if (!chief) {
    quiet = given;
    quiet.verbose = 0;
  }
  const FitOptions& o = chief ? given : quiet;
  MIRROR_REQUIRE(o.batch_size > 0, InvalidArgument, "batch_size must be a positive number of samples, got ", o.batch_size);
  MIRROR_REQUIRE(o.epochs >= 0, InvalidArgument, "epochs must be >= 0, got ", o.epochs);
  check_verbose(o.verbose);
  MIRROR_REQUIRE(o.steps_per_epoch >= 0, InvalidArgument, "steps_per_epoch must be >= 0 (0 = all), got ", o.steps_per_epoch);
  MIRROR_REQUIRE(o.gradient_bucket_bytes >= sizeof(float), InvalidArgument,
                 "gradient_bucket_bytes must hold at least one float, got ", o.gradient_bucket_bytes);
  MIRROR_REQUIRE(o.backup_every_steps >= 0 && o.backup_every_seconds >= 0 && std::isfinite(o.backup_every_seconds),
                 InvalidArgument, "backup_every_steps and backup_every_seconds must be >= 0 (0 = only after each epoch)");
  MIRROR_REQUIRE(o.backup_dir.empty() ? o.backup_every_steps == 0 && o.backup_every_seconds == 0 : true,
                 InvalidArgument, "backup_every_steps and backup_every_seconds need a backup_dir");
  for (const CallbackPtr& c : o.callbacks) MIRROR_REQUIRE(c != nullptr, InvalidArgument, "a callback is null");
  // Both sets are checked before the first step: a bad validation set must not cost an epoch.
  check_data(train, "training set", true);
  if (o.validation_data) check_data(*o.validation_data, "validation set", true);
  const FitData data = split_data(train, o);
  int64_t steps = data::batch_count(data.train_rows, o.batch_size);
  if (o.steps_per_epoch > 0) steps = std::min(steps, o.steps_per_epoch);
  std::ostream& out = out_or_cout(o.out);
  std::optional<TraceFile> trace;
  if (!o.trace.empty() && chief) trace.emplace(runtime_.strategy(), o.trace);

  std::optional<BackupDir> backups;
  if (!o.backup_dir.empty()) backups.emplace(o.backup_dir, o.backup_keep);
  const SignalCatcher signals(o.stop_on_signals || backups);
  FitRun run{.data = data, .options = o, .model = model,
             .identity = {.batch_size = o.batch_size, .seed = o.seed, .shuffle = o.shuffle,
                          .train_rows = data.train_rows, .steps = steps},
             .backups = backups ? &*backups : nullptr, .signals = signals, .progress = {}};
  // A backup is checked whole before anything changes; it is applied after on_train_begin.
  std::optional<std::pair<saving::Checkpoint, std::string>> backup;
  // Each callback may keep a copy of the weights (EarlyStopping's best ones).
  if (backups) backup = backups->newest(out, saving::checkpoint_limit(runtime_, model.variables(), o.callbacks.size()));
  // Before any step: every worker must train the same model on the same batches from the same state.
  const Strategy& strategy = runtime_.strategy();
  strategy.check_agreement("the model", model_fingerprint(model));
  strategy.check_agreement("the batch size", std::to_string(o.batch_size));
  strategy.check_agreement("the number of training samples", std::to_string(data.train_rows));
  strategy.check_agreement("the seed", std::to_string(o.seed));
  strategy.check_agreement("the backup to continue from", backup ? backup->second : std::string("none"));
  if (backup) {
    saving::check_model(runtime_, model.variables(), backup->first, backup->second);
    check_fit(backup->first, run.identity, o.callbacks.size(), runtime_.host_totals().size(), backup->second);
  } else {
    runtime_.require_consistent("fit");
  }

  const int64_t n = runtime_.strategy().num_replicas();
  runtime_.reserve_rows((std::min(o.batch_size, train.count) + n - 1) / n);  // the largest share of any batch
  if (data.val) runtime_.reserve_rows((std::min<int64_t>(o.batch_size, data.val->count) + n - 1) / n);
  ScopeExit release{[&] {
    runtime_.release(train);
    if (o.validation_data) runtime_.release(*o.validation_data);
  }};
  FitParams params{.epochs = o.epochs, .steps = steps, .has_validation = data.val != nullptr,
                   .verbose = o.verbose, .out = &out};
  if (backup) {
    params.resumed = true;
    params.initial_epoch = backup->first.header["fit"]["epoch"].get<int>() - 1;
  }
  for (const CallbackPtr& c : o.callbacks) c->set_context(model, params);
  model.set_stop_training(false);
  for (const CallbackPtr& c : o.callbacks) c->on_train_begin();
  if (backup) {
    // The callbacks first: a state one refuses must leave the model as it was.
    run.progress = restore_fit(backup->first, o.callbacks, backup->second);
    saving::restore_model(runtime_, backup->first, backup->second);
    model.set_stop_training(run.progress.stopped);
    if (o.verbose >= 1)
      out << "Mirror: continuing from the backup " << backup->second << " (epoch " << run.progress.epoch << ", step "
          << run.progress.step << '/' << steps << ")\n";
    backup.reset();
  }
  FitProgress& p = run.progress;
  if (trace) trace->start(trace_capacity(steps, data, o));
  times_.start(runtime_.strategy().num_replicas());
  times_.watch_devices(runtime_.strategy());
  while (p.epoch <= o.epochs && !model.stop_training()) {
    // A run resumed within an epoch has had its on_epoch_begin (a LearningRateScheduler's rate
    // came back with the backup).
    if (p.step == 0)
      for (const CallbackPtr& c : o.callbacks) c->on_epoch_begin(p.epoch - 1);
    EpochLog log;
    run_epoch(run, log);
    for (const CallbackPtr& c : o.callbacks) c->on_epoch_end(p.epoch - 1, log);
    p.history.epochs.push_back(std::move(log));
    ++p.epoch;  // from here on, the progress is that of the next epoch's start
    p.step = p.seen = 0;
    p.seconds = 0;
    p.totals.clear();
    p.stopped = model.stop_training();
    if (backups) write_backup(run, runtime_.iterations());
    if (const int signal = signals.caught()) throw interrupted(run, signal, 0);
  }
  if (trace) trace->finish();
  p.history.report = times_.report(runtime_.strategy());
  if (o.verbose >= 1) print_report(p.history.report, out);
  for (const CallbackPtr& c : o.callbacks) c->on_train_end();
  if (backups && !o.backup_keep_at_end && chief) backups->remove_all();
  return std::move(p.history);
}

size_t Trainer::trace_capacity(int64_t steps, const FitData& data, const FitOptions& o) const {
  const Plan& plan = runtime_.plan();
  const size_t buckets = (plan.trainable_floats + bucket_floats(o) - 1) / bucket_floats(o);
  // A training step's compute lane: the step, gather, loss, each node forward and backward, the
  // wait, the optimizer and a read of the totals; its communication lane: each bucket and the
  // statistics. Validation steps hold fewer.
  const size_t per_step = 2 * plan.nodes.size() + 8 + buckets;
  const int64_t val_steps = data.val ? data::batch_count(static_cast<int64_t>(data.val_order.size()), o.batch_size) : 0;
  const auto spans = static_cast<size_t>((steps + val_steps) * o.epochs) * per_step + 16;
  return std::min(spans, kMaxTraceSpansPerLane);
}

EvaluateResult Trainer::evaluate(const ImageSet& data, const EvaluateOptions& o) {
  MIRROR_REQUIRE(o.batch_size > 0, InvalidArgument, "batch_size must be a positive number of samples, got ", o.batch_size);
  check_verbose(o.verbose);
  check_data(data, "evaluation set", true);
  const int64_t n = runtime_.strategy().num_replicas();
  runtime_.reserve_rows((std::min(o.batch_size, data.count) + n - 1) / n);
  ScopeExit release{[&] { runtime_.release(data); }};
  return evaluate_rows(data, identity_order(data.count), o);
}

EvaluateResult Trainer::evaluate_rows(const ImageSet& data, std::span<const int32_t> order, const EvaluateOptions& o) {
  const auto count = static_cast<int64_t>(order.size());
  const int64_t steps = data::batch_count(count, o.batch_size);
  std::ostream& out = out_or_cout(o.out);
  const int verbose = runtime_.strategy().is_chief() ? o.verbose : 0;
  ProgressBar progress(steps, out, verbose == 1 && ProgressBar::is_terminal(out));
  const std::vector<float>& totals = runtime_.host_totals();
  const size_t bad_step = runtime_.stats_width();
  const auto start = Clock::now();
  const SignalCatcher signals(o.stop_on_signals);
  int signal = 0;
  runtime_.reset_totals();
  const BatchesRun run = run_batches(
      order, o.batch_size, 0, steps, runtime_.iterations(), false,
      [&](int r, std::span<const int32_t> share, int64_t first_row, const StepInfo& info) {
        runtime_.evaluate_step(r, data, share, first_row, info);
      },
      [](int64_t) {},
      [&](int64_t step, int64_t seen, bool read) {
        signal = step + 1 < steps ? signals.caught() : 0;  // with the last batch, the result is whole
        if (signal != 0) return false;
        if (!read) return true;
        MIRROR_REQUIRE(totals[bad_step] < 0, NumericalError, "the model's loss is ", totals[0], " on batch ",
                       static_cast<int64_t>(totals[bad_step]) + 1, "/", steps,
                       " of the evaluation set: its weights or the data hold NaN or huge values");
        if (verbose >= 1) progress.update(step + 1, means(seen));
        return true;
      });
  if (signal != 0) {
    if (verbose == 1 && ProgressBar::is_terminal(out)) out << '\n';  // the progress line stays as it was
    throw Interrupted(signal, str("evaluate stopped by ", signal_name(signal), " after batch ", run.steps, "/", steps));
  }
  EvaluateResult result;
  result.values = means(run.seen);
  result.loss = value_of(result.values, "loss");
  result.accuracy = value_of(result.values, "accuracy");
  result.seconds = seconds_since(start);
  if (verbose >= 1) progress.finish(result.values);
  return result;
}

std::vector<float> Trainer::predict(const ImageSet& data, int64_t batch_size) {
  MIRROR_REQUIRE(batch_size > 0, InvalidArgument, "batch_size must be a positive number of samples, got ", batch_size);
  check_data(data, "prediction set", false);
  Strategy& strategy = runtime_.strategy();
  const int64_t n = strategy.num_replicas();
  runtime_.reserve_rows((std::min(batch_size, data.count) + n - 1) / n);
  ScopeExit release{[&] { runtime_.release(data); }};

  const int64_t width = runtime_.output_width();
  std::vector<float> result(static_cast<size_t>(data.count * width));
  const std::vector<int32_t> order = identity_order(data.count);
  for (int64_t step = 0; step < data::batch_count(data.count, batch_size); ++step) {
    const auto batch = data::batch_indices(order, batch_size, step);
    // Every worker predicts every row (a worker's output holds the whole set).
    strategy.run([&](int r) {
      const BatchShare share = strategy.batch_share_in_process(static_cast<int64_t>(batch.size()), r);
      const int64_t first_row = batch.front() + share.offset;  // batches of `order` are contiguous
      runtime_.predict_step(r, data, batch.subspan(static_cast<size_t>(share.offset), static_cast<size_t>(share.count)),
                            share.offset, static_cast<int64_t>(batch.size()), result.data() + first_row * width);
    });
  }
  return result;
}

}  // namespace mirror
