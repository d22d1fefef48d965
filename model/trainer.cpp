// The training loop: fit / evaluate / predict (see trainer.hpp).
#include "model/trainer.hpp"

#include <algorithm>
#include <chrono>

#include "engine/error.hpp"
#include "engine/progress.hpp"

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

MetricValues Trainer::means(int64_t seen) const {
  const std::vector<float>& totals = runtime_.host_totals();
  MetricValues values{{"loss", totals[0] / double(seen)}};
  for (size_t m = 0; m < runtime_.metrics().size(); ++m)
    values.push_back({runtime_.metrics()[m].name(), totals[1 + m] / double(seen)});
  return values;
}

int64_t Trainer::run_batches(std::span<const int32_t> order, int64_t batch_size, int64_t steps, int64_t first_iteration,
                             bool read_every_step, const ReplicaStep& replica_step, const AfterRead& after_read) {
  Strategy& strategy = runtime_.strategy();
  runtime_.reset_totals();
  int64_t seen = 0;
  auto last_read = Clock::now();
  for (int64_t step = 0; step < steps; ++step) {
    const auto batch = data::batch_indices(order, batch_size, step);
    const auto rows = static_cast<int64_t>(batch.size());
    const auto shares = strategy.split_batch(rows);
    // The host reads the running totals only now and then (on a GPU each read waits for the step).
    const bool read = read_every_step || step + 1 == steps || Clock::now() - last_read >= kReadInterval;
    const StepInfo info{.global_rows = rows, .iteration = first_iteration + step, .step = step, .read_totals = read};
    strategy.run([&](int r) {
      const BatchShare& share = shares[static_cast<size_t>(r)];
      replica_step(r, batch.subspan(static_cast<size_t>(share.offset), static_cast<size_t>(share.count)), share.offset,
                   info);
    });
    seen += rows;
    if (!read) continue;
    last_read = Clock::now();
    after_read(step, seen);
  }
  return seen;
}

void Trainer::run_epoch(const ImageSet& train, const FitOptions& o, int epoch, EpochLog& log) {
  const std::vector<int32_t> samples = o.shuffle ? data::shuffled_indices(train.count, o.seed, static_cast<uint64_t>(epoch - 1))
                                                 : identity_order(train.count);
  int64_t steps = data::batch_count(train.count, o.batch_size);
  if (o.steps_per_epoch > 0) steps = std::min(steps, o.steps_per_epoch);

  std::ostream& out = out_or_cout(o.out);
  const bool bar = o.verbose >= 1;
  if (bar) out << "Epoch " << epoch << '/' << o.epochs << '\n';
  ProgressBar progress(steps, out, o.verbose == 1 && ProgressBar::is_terminal(out));
  const std::vector<float>& totals = runtime_.host_totals();
  const size_t bad_step = runtime_.stats_width();
  const auto start = Clock::now();
  const int64_t first_iteration = runtime_.iterations();
  runtime_.add_iterations(steps);  // every step of the epoch is either applied or, after a NaN, skipped as fit stops
  GradientReducer reducer(runtime_.plan().trainable_floats, std::max<size_t>(1, o.gradient_bucket_bytes / sizeof(float)),
                          runtime_.strategy().num_replicas());
  const int64_t seen = run_batches(
      samples, o.batch_size, steps, first_iteration, o.verify_replicas,
      [&](int r, std::span<const int32_t> share, int64_t first_row, const StepInfo& info) {
        runtime_.train_step(r, train, share, first_row, info, reducer);
      },
      [&](int64_t step, int64_t seen) {
        MIRROR_REQUIRE(totals[bad_step] < 0, NumericalError, "the loss became ", totals[0], " at epoch ", epoch, ", step ",
                       static_cast<int64_t>(totals[bad_step]) + 1, "/", steps, "; no update was applied from that step on, so "
                       "the weights are those of the step before. Lower the learning rate or check the input data.");
        if (o.verify_replicas)
          MIRROR_REQUIRE(runtime_.replicas_identical(), Error, "replicas diverged after epoch ", epoch, " step ", step + 1,
                         ": their variables are no longer bitwise identical (a non-deterministic reduction or a missed update)");
        if (bar) progress.update(step + 1, means(seen));
      });
  log.epoch = epoch;
  log.values = means(seen);
  log.loss = value_of(log.values, "loss");
  log.accuracy = value_of(log.values, "accuracy");
  log.seconds = seconds_since(start);
  log.samples_per_second = double(seen) / log.seconds;
  MetricValues shown = log.values;
  if (o.validation_data) {
    const EvaluateResult val = evaluate(*o.validation_data, {.batch_size = o.batch_size, .verbose = 0});
    for (const auto& [name, value] : val.values) {
      log.values.push_back({"val_" + name, value});
      shown.push_back({"val_" + name, value});
    }
    log.val_loss = val.loss;
    if (has_value(val.values, "accuracy")) log.val_accuracy = val.accuracy;
  }
  if (bar) progress.finish(shown, str(" - ", static_cast<int64_t>(log.samples_per_second), " samples/s"));
}

History Trainer::fit(const ImageSet& train, const FitOptions& o) {
  MIRROR_REQUIRE(o.batch_size > 0, InvalidArgument, "batch_size must be a positive number of samples, got ", o.batch_size);
  MIRROR_REQUIRE(o.epochs >= 0, InvalidArgument, "epochs must be >= 0, got ", o.epochs);
  MIRROR_REQUIRE(o.steps_per_epoch >= 0, InvalidArgument, "steps_per_epoch must be >= 0 (0 = all), got ", o.steps_per_epoch);
  MIRROR_REQUIRE(o.gradient_bucket_bytes >= sizeof(float), InvalidArgument,
                 "gradient_bucket_bytes must hold at least one float, got ", o.gradient_bucket_bytes);
  // Both sets are checked before the first step: a bad validation set must not cost an epoch.
  check_data(train, "training set", true);
  if (o.validation_data) check_data(*o.validation_data, "validation set", true);
  const int64_t n = runtime_.strategy().num_replicas();
  runtime_.reserve_rows((std::min(o.batch_size, train.count) + n - 1) / n);  // the largest share of any batch
  ScopeExit release{[&] { runtime_.release(train); }};
  History history;
  for (int epoch = 1; epoch <= o.epochs; ++epoch) {
    history.epochs.emplace_back();
    run_epoch(train, o, epoch, history.epochs.back());
  }
  return history;
}

EvaluateResult Trainer::evaluate(const ImageSet& data, const EvaluateOptions& o) {
  MIRROR_REQUIRE(o.batch_size > 0, InvalidArgument, "batch_size must be a positive number of samples, got ", o.batch_size);
  check_data(data, "evaluation set", true);
  const int64_t n = runtime_.strategy().num_replicas();
  runtime_.reserve_rows((std::min(o.batch_size, data.count) + n - 1) / n);
  ScopeExit release{[&] { runtime_.release(data); }};

  const std::vector<int32_t> order = identity_order(data.count);
  const int64_t steps = data::batch_count(data.count, o.batch_size);
  std::ostream& out = out_or_cout(o.out);
  ProgressBar progress(steps, out, o.verbose == 1 && ProgressBar::is_terminal(out));
  const std::vector<float>& totals = runtime_.host_totals();
  const size_t bad_step = runtime_.stats_width();
  const auto start = Clock::now();
  const int64_t seen = run_batches(
      order, o.batch_size, steps, runtime_.iterations(), false,
      [&](int r, std::span<const int32_t> share, int64_t first_row, const StepInfo& info) {
        runtime_.evaluate_step(r, data, share, first_row, info);
      },
      [&](int64_t step, int64_t seen) {
        MIRROR_REQUIRE(totals[bad_step] < 0, NumericalError, "the model's loss is ", totals[0], " on batch ",
                       static_cast<int64_t>(totals[bad_step]) + 1, "/", steps,
                       " of the evaluation set: its weights or the data hold NaN or huge values");
        if (o.verbose >= 1) progress.update(step + 1, means(seen));
      });
  EvaluateResult result;
  result.values = means(seen);
  result.loss = value_of(result.values, "loss");
  result.accuracy = value_of(result.values, "accuracy");
  result.seconds = seconds_since(start);
  if (o.verbose >= 1) progress.finish(result.values);
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
    const auto shares = strategy.split_batch(static_cast<int64_t>(batch.size()));
    strategy.run([&](int r) {
      const BatchShare& share = shares[static_cast<size_t>(r)];
      const int64_t first_row = batch.front() + share.offset;  // batches of `order` are contiguous
      runtime_.predict_step(r, data, batch.subspan(static_cast<size_t>(share.offset), static_cast<size_t>(share.count)),
                            share.offset, static_cast<int64_t>(batch.size()), result.data() + first_row * width);
    });
  }
  return result;
}

}  // namespace mirror
