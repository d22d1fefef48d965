// Sequential's training loop: fit / evaluate / predict. The main thread walks the batches; each
// step runs on every replica's worker thread: gather its share of the batch, forward, loss scaled
// by 1 / global batch, backward, all-reduce of the flat gradient buffer (with the loss statistics
// at its tail), and the same optimizer update everywhere.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "engine/error.hpp"
#include "engine/progress.hpp"
#include "model/replica_state.hpp"
#include "model/sequential.hpp"

namespace mirror {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::ostream& out_or_cout(std::ostream* out) { return out ? *out : std::cout; }

// How often the training loop reads the device's running totals (progress and the NaN check).
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

// The compiled loss and metric (sparse categorical cross-entropy and accuracy) of `rows` outputs
// with `cols` columns: stats[0] += the loss sum, stats[1] += the correct count. With
// `fused_softmax` the gradient goes straight to the softmax's input.
void score(Backend& b, int64_t rows, int64_t cols, const float* outputs, const int32_t* labels, float scale,
           bool fused_softmax, float* dinput, float* stats) {
  const LossSpec loss{.kind = LossKind::SparseCategoricalCrossentropy, .gradient_through_activation = fused_softmax};
  b.loss(loss, rows, cols, outputs, labels, scale, dinput, stats);
  b.metric({.kind = MetricKind::SparseCategoricalAccuracy}, rows, cols, outputs, labels, stats + 1);
}

}  // namespace

void Sequential::check_data(const ImageSet& data, const char* what) {
  MIRROR_REQUIRE(data.count > 0, DataError, "the ", what, " is empty");
  MIRROR_REQUIRE(static_cast<int64_t>(data.pixels.size()) == data.count * data.sample_size() &&
                     static_cast<int64_t>(data.labels.size()) == data.count,
                 DataError, "the ", what, " is inconsistent: ", data.count, " samples of ", data.sample_shape(),
                 " but ", data.pixels.size(), " pixels and ", data.labels.size(), " labels");
  if (!built_) {
    build(data.sample_shape());
    initialize_parameters();
  }
  MIRROR_REQUIRE(data.sample_shape() == input_shape(), DataError, "the model expects inputs of shape ", input_shape(),
                 " but the ", what, " has images of shape ", data.sample_shape());
  data::check_labels(data, output_shape()[0], what);
}

void Sequential::reserve_batch(int64_t batch_size, int64_t count) {
  const int64_t n = strategy_->num_replicas();
  reserve_rows((std::min(batch_size, count) + n - 1) / n);  // the largest share of any batch
}

void Sequential::reserve_rows(int64_t rows) {
  const auto& first = *replicas_.front();
  if (rows <= first.capacity_rows) return;
  const int64_t in_size = input_shape().count();
  int64_t widest = in_size;
  for (const auto& layer : layers_) widest = std::max(widest, layer->output_shape().count());
  strategy_->run([&](int r) {
    Backend& b = strategy_->backend(r);
    ReplicaState& s = *replicas_[static_cast<size_t>(r)];
    const auto floats = [&](int64_t n) { return static_cast<size_t>(rows * n) * sizeof(float); };
    s.input = b.allocate(floats(in_size));
    s.labels = b.allocate(static_cast<size_t>(rows) * sizeof(int32_t));
    s.outputs.clear();
    s.outputs.resize(layers_.size());
    s.act.assign(layers_.size() + 1, nullptr);
    s.act[0] = s.input.as<float>();
    for (size_t l = 0; l < layers_.size(); ++l) {
      if (layers_[l]->is_reshape()) {
        s.act[l + 1] = s.act[l];  // same memory, reinterpreted
      } else {
        s.outputs[l] = b.allocate(floats(layers_[l]->output_shape().count()));
        s.act[l + 1] = s.outputs[l].as<float>();
      }
    }
    for (auto& d : s.delta) d = b.allocate(floats(widest));
    s.capacity_rows = rows;
  });
}

ResidentImages& Sequential::resident(int replica, const ImageSet& data) {
  auto& cache = replicas_[static_cast<size_t>(replica)]->resident;
  auto it = cache.find(&data);
  if (it == cache.end()) it = cache.emplace(&data, strategy_->backend(replica).make_resident(data)).first;
  return *it->second;
}

void Sequential::release_resident(const ImageSet& data) {
  // Device copies live for one call of fit / evaluate / predict, so a data set that is freed or
  // changed afterwards is never read through a stale copy.
  for (auto& s : replicas_) s->resident.erase(&data);
}

void Sequential::forward(int replica, int64_t rows) {
  ReplicaState& s = *replicas_[static_cast<size_t>(replica)];
  Backend& b = strategy_->backend(replica);
  for (size_t l = 0; l < layers_.size(); ++l) {
    if (layers_[l]->is_reshape()) continue;
    const LayerArgs args{b, rows, s.param_views[l], s.grad_views[l]};
    layers_[l]->forward(args, s.act[l], s.act[l + 1]);
  }
}

void Sequential::reduce_ready_buckets(int replica, size_t ready, size_t& next_bucket) {
  ReplicaState& s = *replicas_[static_cast<size_t>(replica)];
  const size_t end = param_count_ + kStatCount;
  while (next_bucket < end && (next_bucket + bucket_floats_ <= ready || ready == end)) {
    const size_t count = std::min(bucket_floats_, end - next_bucket);
    strategy_->communicator().all_reduce_sum_async(replica, {s.grads.as<float>() + next_bucket, count},
                                                   "gradient all_reduce");
    next_bucket += count;
  }
}

void Sequential::backward(int replica, int64_t rows, bool fused_softmax, size_t& next_bucket) {
  ReplicaState& s = *replicas_[static_cast<size_t>(replica)];
  Backend& b = strategy_->backend(replica);
  int current = 0;  // s.delta[current] holds dL/d(output of layer l)
  bool activation_done = fused_softmax;  // the loss's gradient already went through the softmax
  for (size_t l = layers_.size(); l-- > 0;) {
    if (layers_[l]->is_reshape()) continue;  // the gradient is the same memory, reinterpreted
    bool below_has_params = false;
    for (size_t k = 0; k < l; ++k) below_has_params |= !layer_params_[k].empty();
    float* dx = below_has_params ? s.delta[1 - current].as<float>() : nullptr;
    // A max-pooling layer right after a ReLU layer applies the ReLU's derivative itself.
    const bool input_is_relu = dx && l > 0 && layers_[l]->absorbs_input_relu() &&
                               layers_[l - 1]->activation() == Activation::ReLU;
    const LayerArgs args{b, rows, s.param_views[l], s.grad_views[l]};
    layers_[l]->backward(args, s.act[l], s.act[l + 1], s.delta[current].as<float>(), dx, {activation_done, input_is_relu});
    reduce_ready_buckets(replica, ready_after_[l], next_bucket);
    if (!dx) break;
    activation_done = input_is_relu;
    current = 1 - current;
  }
}

void Sequential::reset_totals() {
  strategy_->run([&](int r) {
    ReplicaState& s = *replicas_[static_cast<size_t>(r)];
    strategy_->backend(r).fill(s.totals.as<float>(), 2, 0.0f);
    strategy_->backend(r).fill(s.totals.as<float>() + 2, 1, -1.0f);
  });
  replicas_.front()->host_totals[0] = replicas_.front()->host_totals[1] = 0.0f;
  replicas_.front()->host_totals[2] = -1.0f;
}

void Sequential::train_step(int replica, const ImageSet& data, std::span<const int32_t> indices, int64_t global_rows,
                            int64_t iteration, int64_t step, bool read_totals) {
  ReplicaState& s = *replicas_[static_cast<size_t>(replica)];
  Backend& b = strategy_->backend(replica);
  const auto rows = static_cast<int64_t>(indices.size());
  float* stats = s.stats(stats_offset_);
  size_t next_bucket = 0;  // gradients [0, next_bucket) have their all-reduce started
  if (rows == 0) {
    b.fill(s.grads.as<float>(), param_count_ + kStatCount, 0.0f);  // an empty share adds nothing
  } else {
    b.fill(stats, kStatCount, 0.0f);
    b.gather_batch(resident(replica, data), indices, s.input.as<float>(), s.labels.as<int32_t>());
    forward(replica, rows);
    const bool fused = layers_.back()->activation() == Activation::Softmax;
    score(b, rows, output_shape()[0], s.act.back(), s.labels.as<int32_t>(), 1.0f / static_cast<float>(global_rows), fused,
          s.delta[0].as<float>(), stats);
    backward(replica, rows, fused, next_bucket);
  }
  // The rest (all of it for an empty share): the last bucket holds the loss statistics, so every
  // replica's optimizer sees the global loss. Every replica issues the same buckets in the same order.
  reduce_ready_buckets(replica, param_count_ + kStatCount, next_bucket);
  strategy_->communicator().wait_all(replica);
  // Every replica keeps the same totals; once a loss is not finite they stop the optimizer for the
  // rest of the epoch, without the host having to look at every step.
  b.accumulate_stats(kStatCount, stats, s.totals.as<float>(), step);
  optimizer_->apply(b, iteration, param_count_, s.params.as<float>(), s.grads.as<float>(), s.slots.as<float>(),
                    s.totals.as<float>());
  if (replica == 0 && read_totals) b.download(s.totals.data(), s.host_totals, sizeof(s.host_totals));
}

int64_t Sequential::run_batches(std::span<const int32_t> order, int64_t batch_size, int64_t steps, bool read_every_step,
                                const ReplicaStep& replica_step, const AfterRead& after_read) {
  reset_totals();
  int64_t seen = 0;
  auto last_read = Clock::now();
  for (int64_t step = 0; step < steps; ++step) {
    const auto batch = data::batch_indices(order, batch_size, step);
    const auto rows = static_cast<int64_t>(batch.size());
    const auto shares = strategy_->split_batch(rows);
    // The host reads the running totals only now and then (on a GPU each read waits for the step).
    const bool read = read_every_step || step + 1 == steps || Clock::now() - last_read >= kReadInterval;
    strategy_->run([&](int r) {
      const BatchShare& share = shares[static_cast<size_t>(r)];
      replica_step(r, batch.subspan(static_cast<size_t>(share.offset), static_cast<size_t>(share.count)), rows, step, read);
    });
    seen += rows;
    if (!read) continue;
    last_read = Clock::now();
    after_read(step, seen);
  }
  return seen;
}

void Sequential::verify_replicas(int epoch, int64_t step) {
  MIRROR_REQUIRE(replicas_identical(), Error, "replicas diverged after epoch ", epoch, " step ", step,
                 ": their parameters are no longer bitwise identical (a non-deterministic reduction or a missed update)");
}

void Sequential::run_epoch(const ImageSet& train, const FitOptions& o, int epoch, EpochLog& log) {
  const std::vector<int32_t> samples = o.shuffle ? data::shuffled_indices(train.count, o.seed, static_cast<uint64_t>(epoch - 1))
                                                 : identity_order(train.count);
  int64_t steps = data::batch_count(train.count, o.batch_size);
  if (o.steps_per_epoch > 0) steps = std::min(steps, o.steps_per_epoch);

  std::ostream& out = out_or_cout(o.out);
  const bool bar = o.verbose >= 1;
  if (bar) out << "Epoch " << epoch << '/' << o.epochs << '\n';
  ProgressBar progress(steps, out, o.verbose == 1 && ProgressBar::is_terminal(out));
  const float* totals = replicas_.front()->host_totals;
  const auto start = Clock::now();
  const int64_t first_iteration = iterations_;
  iterations_ += steps;  // every step of the epoch is either applied or, after a NaN, skipped as fit stops
  const int64_t seen = run_batches(
      samples, o.batch_size, steps, o.verify_replicas,
      [&](int r, std::span<const int32_t> share, int64_t rows, int64_t step, bool read) {
        train_step(r, train, share, rows, first_iteration + step, step, read);
      },
      [&](int64_t step, int64_t seen) {
        MIRROR_REQUIRE(totals[2] < 0, NumericalError, "the loss became ", totals[0], " at epoch ", epoch, ", step ",
                       static_cast<int64_t>(totals[2]) + 1, "/", steps, "; no update was applied from that step on, so "
                       "the weights are those of the step before. Lower the learning rate or check the input data.");
        if (o.verify_replicas) verify_replicas(epoch, step + 1);
        if (bar) progress.update(step + 1, {{"loss", totals[0] / double(seen)}, {"accuracy", totals[1] / double(seen)}});
      });
  const double loss_sum = totals[0], correct = totals[1];
  log.epoch = epoch;
  log.loss = loss_sum / double(seen);
  log.accuracy = correct / double(seen);
  log.seconds = seconds_since(start);
  log.samples_per_second = double(seen) / log.seconds;
  ProgressBar::Values values{{"loss", log.loss}, {"accuracy", log.accuracy}};
  if (o.validation_data) {
    const EvaluateResult val = evaluate(*o.validation_data, {.batch_size = o.batch_size, .verbose = 0});
    log.val_loss = val.loss;
    log.val_accuracy = val.accuracy;
    values.push_back({"val_loss", val.loss});
    values.push_back({"val_accuracy", val.accuracy});
  }
  if (bar) progress.finish(values, str(" - ", static_cast<int64_t>(log.samples_per_second), " samples/s"));
}

History Sequential::fit(const ImageSet& train, const FitOptions& o) {
  require_compiled("fit");
  MIRROR_REQUIRE(o.batch_size > 0, InvalidArgument, "batch_size must be a positive number of samples, got ", o.batch_size);
  MIRROR_REQUIRE(o.epochs >= 0, InvalidArgument, "epochs must be >= 0, got ", o.epochs);
  MIRROR_REQUIRE(o.steps_per_epoch >= 0, InvalidArgument, "steps_per_epoch must be >= 0 (0 = all), got ", o.steps_per_epoch);
  check_data(train, "training set");
  if (o.validation_data) check_data(*o.validation_data, "validation set");
  MIRROR_REQUIRE(o.gradient_bucket_bytes >= sizeof(float), InvalidArgument,
                 "gradient_bucket_bytes must hold at least one float, got ", o.gradient_bucket_bytes);
  bucket_floats_ = o.gradient_bucket_bytes / sizeof(float);
  reserve_batch(o.batch_size, train.count);
  ScopeExit release{[&] { release_resident(train); }};
  History history;
  for (int epoch = 1; epoch <= o.epochs; ++epoch) {
    history.epochs.emplace_back();
    run_epoch(train, o, epoch, history.epochs.back());
  }
  return history;
}

void Sequential::evaluate_step(int replica, const ImageSet& data, std::span<const int32_t> indices, int64_t step,
                               bool read_totals) {
  ReplicaState& s = *replicas_[static_cast<size_t>(replica)];
  Backend& b = strategy_->backend(replica);
  const auto rows = static_cast<int64_t>(indices.size());
  b.fill(s.eval_stats.as<float>(), kStatCount, 0.0f);
  if (rows > 0) {
    b.gather_batch(resident(replica, data), indices, s.input.as<float>(), s.labels.as<int32_t>());
    forward(replica, rows);
    score(b, rows, output_shape()[0], s.act.back(), s.labels.as<int32_t>(), 1.0f, false, nullptr, s.eval_stats.as<float>());
  }
  strategy_->communicator().all_reduce_sum(replica, {s.eval_stats.as<float>(), kStatCount}, "evaluation all_reduce");
  b.accumulate_stats(kStatCount, s.eval_stats.as<float>(), s.totals.as<float>(), step);
  if (replica == 0 && read_totals) b.download(s.totals.data(), s.host_totals, sizeof(s.host_totals));
}

EvaluateResult Sequential::evaluate(const ImageSet& data, const EvaluateOptions& o) {
  require_compiled("evaluate");
  MIRROR_REQUIRE(o.batch_size > 0, InvalidArgument, "batch_size must be a positive number of samples, got ", o.batch_size);
  check_data(data, "evaluation set");
  reserve_batch(o.batch_size, data.count);
  ScopeExit release{[&] { release_resident(data); }};

  const std::vector<int32_t> order = identity_order(data.count);
  const int64_t steps = data::batch_count(data.count, o.batch_size);
  std::ostream& out = out_or_cout(o.out);
  ProgressBar progress(steps, out, o.verbose == 1 && ProgressBar::is_terminal(out));
  const float* totals = replicas_.front()->host_totals;
  const auto start = Clock::now();
  const int64_t seen = run_batches(
      order, o.batch_size, steps, false,
      [&](int r, std::span<const int32_t> share, int64_t, int64_t step, bool read) {
        evaluate_step(r, data, share, step, read);
      },
      [&](int64_t step, int64_t seen) {
        MIRROR_REQUIRE(totals[2] < 0, NumericalError, "the model's loss is ", totals[0], " on batch ",
                       static_cast<int64_t>(totals[2]) + 1, "/", steps,
                       " of the evaluation set: its weights or the data hold NaN or huge values");
        if (o.verbose >= 1)
          progress.update(step + 1, {{"loss", totals[0] / double(seen)}, {"accuracy", totals[1] / double(seen)}});
      });
  const double loss_sum = totals[0], correct = totals[1];
  EvaluateResult result{loss_sum / double(seen), correct / double(seen), seconds_since(start)};
  if (o.verbose >= 1) progress.finish({{"loss", result.loss}, {"accuracy", result.accuracy}});
  return result;
}

std::vector<float> Sequential::predict(const ImageSet& data, int64_t batch_size) {
  require_compiled("predict");
  MIRROR_REQUIRE(batch_size > 0, InvalidArgument, "batch_size must be a positive number of samples, got ", batch_size);
  check_data(data, "prediction set");
  reserve_batch(batch_size, data.count);
  ScopeExit release{[&] { release_resident(data); }};

  const int64_t width = output_shape()[0];
  std::vector<float> result(static_cast<size_t>(data.count * width));
  const std::vector<int32_t> order = identity_order(data.count);
  for (int64_t step = 0; step < data::batch_count(data.count, batch_size); ++step) {
    const auto batch = data::batch_indices(order, batch_size, step);
    const auto shares = strategy_->split_batch(static_cast<int64_t>(batch.size()));
    strategy_->run([&](int r) {
      const BatchShare& share = shares[static_cast<size_t>(r)];
      if (share.count == 0) return;
      ReplicaState& s = *replicas_[static_cast<size_t>(r)];
      Backend& b = strategy_->backend(r);
      b.gather_batch(resident(r, data), batch.subspan(static_cast<size_t>(share.offset), static_cast<size_t>(share.count)),
                     s.input.as<float>(), s.labels.as<int32_t>());
      forward(r, share.count);
      const int64_t first_row = batch.front() + share.offset;  // batches of `order` are contiguous
      b.download(s.act.back(), result.data() + first_row * width, static_cast<size_t>(share.count * width) * sizeof(float));
    });
  }
  return result;
}

}  // namespace mirror
