// Training-step time against the host replica count, for the model of --model (Model.fit with
// steps_per_epoch, Adam, synthetic images of the model's input shape):
//   cnn (default)  the reference CNN on 28x28x1, 54,410 parameters, in three modes:
//     weak/        per-replica batch 32, one thread per replica (a replica owns a core, as it would a GPU)
//     strong/      global batch 128, one thread per replica
//     same_cores/  --threads cores in all, split among 1 or 2 replicas (2 x 1 thread vs 1 x 2 threads)
//   resnet20       CIFAR-style ResNet-20 on 28x28x1 (0.27 M parameters): resnet20/weak/, 32 per replica
//   resnet50       Keras applications' ResNet-50 on 224x224x3, 1000 classes (25.6 M parameters):
//                  resnet50/weak/, 2 per replica
// --per-replica-batch N changes the weak batch of resnet20 / resnet50.
// Counters, each a mean over the ranks and the timed steps:
//   step_ms, samples_per_s  wall time of a step (fit's time / steps), global batch / step time;
//   allreduce_share  time rank threads spent inside the gradient buckets' all-reduces (a timing
//                    decorator around the host communicator: all_reduce_sum_async and wait_all,
//                    each bucket's collective timed) / step time; it includes waiting for the
//                    slowest replica. The step statistics' all-reduce is not in it;
//   other_collective_share  the other collectives of the step (the loss and metric sums) / step time;
//   allreduce_alone  the same buckets' all-reduces timed alone on the same replicas / step time;
//   allreduce_floats, buckets  gradient floats and buckets all-reduced per step (25 MiB buckets,
//                    FitOptions' default); gradient_MiB = allreduce_floats * 4 / 2^20;
//   backward_ms      from the backward pass's start to its end (Strategy::step_phase);
//   window_ms        from the first bucket's launch to the last bucket's completion;
//   window_in_backward_ms  the part of that window inside the backward span;
//   hidden_share     the share of the all-reduce time that backward compute hides. 0 on the host
//                    by construction: the host communicator runs an "async" all-reduce at once,
//                    inside backward, which stops computing meanwhile, so window_in_backward_ms
//                    is time backward waited, not time hidden. A GPU strategy, whose buckets run
//                    on a communication stream, would report window_in_backward / allreduce.
// Speedup and efficiency against the 1-replica run of the same mode are printed last and computed
// by plot_scaling.py from --benchmark_out JSON (cnn's weak and strong modes).
//
// Launched as several worker processes (mpirun -np N, MPI builds), the replicas are --replicas per
// worker (default 1) of every worker, reduced across the workers by the multi-worker strategy's
// communicator (the rank-order chain), in one configuration, workers/: weak scaling with the
// model's per-replica batch, a fixed --fit-calls timed fit() calls (default 3: every worker must
// run as many steps). There the buckets' all-reduces run on the communicator's progress thread
// while backward goes on, so allreduce_share is the time backward and the update waited for them
// (the exposed part) and hidden_share = 1 - allreduce_share / allreduce_alone.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "benchmarks/bench_util.hpp"
#include "mirror/collectives/host_communicator.hpp"
#include "mirror/engine/host/host_backend.hpp"
#include "mirror/mirror.hpp"
#include "mirror/strategy/gradient_reducer.hpp"
#if MIRROR_BENCH_WITH_MPI
#include "mirror/collectives/mpi_host_communicator.hpp"
#endif

namespace mirror::bench {
namespace {

// Forwards to a communicator (in process, or across the workers) and times, per rank, the gradient
// buckets' all-reduces apart from the other collectives, and each step's bucket window against its
// backward span.
class TimedCommunicator final : public Communicator {
 public:
  explicit TimedCommunicator(std::unique_ptr<Communicator> inner)
      : inner_(std::move(inner)), ranks_(static_cast<size_t>(inner_->size())) {}
  int size() const override { return inner_->size(); }
  int world_size() const override { return inner_->world_size(); }
  int first_global_rank() const override { return inner_->first_global_rank(); }
  void all_reduce_sum(int rank, std::span<float> data, const char* what) override {
    timed(rank, data.size(), what, [&] { inner_->all_reduce_sum(rank, data, what); });
  }
  void all_reduce_sum_async(int rank, std::span<float> data, const char* what) override {
    timed(rank, data.size(), what, [&] { inner_->all_reduce_sum_async(rank, data, what); });
  }
  // Waiting for the buckets is part of their all-reduce (nothing to wait for on the host).
  void wait_all(int rank) override {
    Rank& r = ranks_[static_cast<size_t>(rank)];
    const auto start = Clock::now();
    inner_->wait_all(rank);
    const auto end = Clock::now();
    r.gradient_ns += std::chrono::nanoseconds(end - start).count();
    if (r.step_buckets > 0) r.last_done = end;
  }
  void broadcast(int rank, std::span<float> data, int root) override { inner_->broadcast(rank, data, root); }
  void barrier(int rank) override { inner_->barrier(rank); }
  void abort(const std::string& reason) override { inner_->abort(reason); }

  // Strategy::step_phase of `rank`; a step's window is closed when the next step begins.
  void step_phase(int rank, StepPhase phase) {
    Rank& r = ranks_[static_cast<size_t>(rank)];
    if (phase == StepPhase::BackwardEnd) {
      r.backward_end = Clock::now();
      return;
    }
    close_step(r);
    r.in_step = true;
    r.step_buckets = 0;
    r.step_floats = 0;
    r.backward_begin = Clock::now();
  }

  void reset() { std::fill(ranks_.begin(), ranks_.end(), Rank{}); }

  struct Totals {  // sums over the timed steps, in seconds; means over the ranks
    double gradient_s = 0, other_s = 0, backward_s = 0, window_s = 0, window_in_backward_s = 0;
    int64_t steps = 0;               // steps whose window was seen (rank 0)
    size_t floats = 0, buckets = 0;  // one step's gradient floats and buckets (rank 0's last step)
    std::vector<size_t> bucket_floats;
  };
  // Closes the open steps; only once every rank's thread is done (after fit returns).
  Totals totals() {
    Totals t;
    for (Rank& r : ranks_) {
      close_step(r);
      const double n = double(ranks_.size());
      t.gradient_s += double(r.gradient_ns) * 1e-9 / n;
      t.other_s += double(r.other_ns) * 1e-9 / n;
      t.backward_s += double(r.backward_ns) * 1e-9 / n;
      t.window_s += double(r.window_ns) * 1e-9 / n;
      t.window_in_backward_s += double(r.window_in_backward_ns) * 1e-9 / n;
    }
    t.steps = ranks_[0].steps;
    t.bucket_floats = ranks_[0].last_bucket_floats;
    t.buckets = t.bucket_floats.size();
    for (size_t f : t.bucket_floats) t.floats += f;
    return t;
  }

 private:
  struct Rank {  // written only by its own rank's thread
    int64_t gradient_ns = 0, other_ns = 0, backward_ns = 0, window_ns = 0, window_in_backward_ns = 0, steps = 0;
    bool in_step = false;
    int64_t step_buckets = 0;
    size_t step_floats = 0;
    Clock::time_point backward_begin, backward_end, first_launch, last_done;
    std::vector<size_t> bucket_floats, last_bucket_floats;  // this step's and the last closed step's
  };

  template <typename Fn>
  void timed(int rank, size_t count, const char* what, Fn&& collective) {
    Rank& r = ranks_[static_cast<size_t>(rank)];
    const bool bucket = std::string_view(what) == kGradientAllReduce;
    const auto start = Clock::now();
    collective();
    const auto end = Clock::now();
    (bucket ? r.gradient_ns : r.other_ns) += std::chrono::nanoseconds(end - start).count();
    if (!bucket || !r.in_step) return;
    if (r.step_buckets++ == 0) {
      r.first_launch = start;
      r.bucket_floats.clear();
    }
    r.bucket_floats.push_back(count);
    r.last_done = end;
  }

  static void close_step(Rank& r) {
    if (!r.in_step) return;
    r.in_step = false;
    ++r.steps;
    const auto ns = [](auto d) { return std::chrono::nanoseconds(d).count(); };
    r.backward_ns += ns(r.backward_end - r.backward_begin);
    if (r.step_buckets == 0) return;
    r.window_ns += ns(r.last_done - r.first_launch);
    const auto from = std::max(r.first_launch, r.backward_begin), to = std::min(r.last_done, r.backward_end);
    if (from < to) r.window_in_backward_ns += ns(to - from);
    r.last_bucket_floats = r.bucket_floats;
  }

  std::unique_ptr<Communicator> inner_;
  std::vector<Rank> ranks_;
};

bool g_workers = false;  // launched as several worker processes

// The replicas' communicator: in process, or (launched as workers) across them, in rank order.
std::unique_ptr<Communicator> make_inner_communicator(int replicas) {
#if MIRROR_BENCH_WITH_MPI
  if (g_workers) return std::make_unique<MpiHostCommunicator>(replicas);
#else
  if (g_workers) MpiWorld::get();  // throws, saying how to build with MPI
#endif
  return std::make_unique<HostCommunicator>(replicas);
}

// HostStrategy's replicas (same thread split) with the timing communicator; launched as workers,
// this worker's replicas of all of them.
class TimedHostStrategy final : public Strategy {
 public:
  TimedHostStrategy(int replicas, int threads)
      : Strategy(g_workers ? "multi-worker" : "host", backends(replicas, threads)) {
    start();
  }
  TimedCommunicator& timed() { return static_cast<TimedCommunicator&>(communicator()); }
  void step_phase(int replica, StepPhase phase) override { timed().step_phase(replica, phase); }

 protected:
  std::unique_ptr<Communicator> make_communicator() override {
    return std::make_unique<TimedCommunicator>(make_inner_communicator(num_replicas()));
  }

 private:
  static std::vector<std::unique_ptr<Backend>> backends(int replicas, int threads) {
    std::vector<std::unique_ptr<Backend>> list;
    for (int r = 0; r < replicas; ++r)
      list.push_back(make_host_backend(std::max(1, threads / replicas + (r < threads % replicas ? 1 : 0))));
    return list;
  }
};

ModelChoice g_model;

struct Config {
  std::string mode;  // weak, strong, same_cores
  int replicas, threads;
  int64_t global_batch;
};

struct Result {
  Config config;
  int64_t iterations;
  double step_s, samples_per_s, allreduce_share, allreduce_alone, other_share;
  double backward_s, window_s, window_in_backward_s;  // per step
  size_t floats, buckets;
  double hidden_share = 0;
};
std::vector<Result> g_results;  // every run (repetition) of every config

// Seconds of one step's bucket all-reduces (`bucket_floats`) on the strategy's replicas, issued
// as a step issues them, alone (mean of several, after a warm-up; fewer for large gradients).
double time_all_reduce_alone(Strategy& strategy, const std::vector<size_t>& bucket_floats) {
  size_t total = 0;
  for (size_t f : bucket_floats) total += f;
  const int reps = static_cast<int>(std::clamp<size_t>(size_t{200} * 100'000 / std::max<size_t>(total, 1), 3, 200));
  const int n = strategy.num_replicas();
  std::vector<std::vector<float>> bufs(static_cast<size_t>(n));
  double seconds = 0;
  strategy.run([&](int r) {
    auto& b = bufs[static_cast<size_t>(r)];
    b.assign(total, 1e-6f);
    const auto step = [&] {
      size_t offset = 0;
      for (size_t f : bucket_floats) {
        strategy.communicator().all_reduce_sum(r, {b.data() + offset, f});
        offset += f;
      }
    };
    for (int k = 0; k < std::min(reps, 10); ++k) step();
    strategy.communicator().barrier(r);
    const auto start = Clock::now();
    for (int k = 0; k < reps; ++k) step();
    if (r == 0) seconds = seconds_since(start) / reps;
  });
  return seconds;
}

// Steps per fit() call, so fit's per-call work is amortised without making a ResNet-50 run long.
int64_t steps_per_fit() { return g_model.name == "cnn" ? 20 : g_model.name == "resnet20" ? 5 : 2; }

void BM_step(benchmark::State& state, Config c) {
  const int64_t steps_per_call = steps_per_fit();
  const ImageSet data = model_images(g_model, c.global_batch * steps_per_call);
  TimedHostStrategy strategy(c.replicas, c.threads);
  const std::unique_ptr<Model> model = make_model(g_model);
  model->compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()}, 1);
  const FitOptions options{.epochs = 1, .batch_size = c.global_batch, .verbose = 0, .steps_per_epoch = steps_per_call};
  model->fit(data, options);  // warm-up: buffers, oneDNN primitives, caches

  strategy.timed().reset();
  double seconds = 0;
  int64_t steps = 0;
  for (auto _ : state) {
    const auto start = Clock::now();
    model->fit(data, options);
    const double s = seconds_since(start);
    state.SetIterationTime(s / double(steps_per_call));
    seconds += s;
    steps += steps_per_call;
  }
  const TimedCommunicator::Totals t = strategy.timed().totals();
  const double step_s = seconds / double(steps);
  const double alone = strategy.world_replicas() > 1 ? time_all_reduce_alone(strategy, t.bucket_floats) : 0.0;
  const double per_step = 1.0 / double(std::max<int64_t>(t.steps, 1));

  Result r{c, static_cast<int64_t>(state.iterations()), step_s, double(c.global_batch) / step_s,
           t.gradient_s / double(steps) / step_s, alone / step_s, t.other_s / double(steps) / step_s,
           t.backward_s * per_step, t.window_s * per_step, t.window_in_backward_s * per_step, t.floats, t.buckets};
  state.counters["replicas"] = c.replicas;
  state.counters["cpu_threads"] = c.threads;
  state.counters["global_batch"] = double(c.global_batch);
  state.counters["step_ms"] = step_s * 1e3;
  state.counters["samples_per_s"] = r.samples_per_s;
  state.counters["allreduce_share"] = r.allreduce_share;
  state.counters["allreduce_alone"] = r.allreduce_alone;
  state.counters["other_collective_share"] = r.other_share;
  state.counters["allreduce_floats"] = double(t.floats);
  state.counters["gradient_MiB"] = double(t.floats) * sizeof(float) / double(1 << 20);
  state.counters["buckets"] = double(t.buckets);
  state.counters["backward_ms"] = r.backward_s * 1e3;
  state.counters["window_ms"] = r.window_s * 1e3;
  state.counters["window_in_backward_ms"] = r.window_in_backward_s * 1e3;
  // In process the all-reduce runs inside backward, which waits (see the header); across workers
  // backward goes on while the progress thread moves the buckets.
  r.hidden_share = g_workers && r.allreduce_alone > 0 ? std::max(0.0, 1.0 - r.allreduce_share / r.allreduce_alone) : 0.0;
  state.counters["hidden_share"] = r.hidden_share;
  state.counters["workers"] = strategy.world_replicas() / c.replicas;
  g_results.push_back(r);
}

bool same_config(const Config& a, const Config& b) {
  return a.mode == b.mode && a.replicas == b.replicas && a.threads == b.threads && a.global_batch == b.global_batch;
}

// The run with the median step time among the repetitions of `c`. Google Benchmark first runs a
// benchmark with fewer iterations to size it; only the runs with the most iterations count.
const Result* median_result(const Config& c) {
  int64_t most = 0;
  for (const Result& r : g_results)
    if (same_config(r.config, c)) most = std::max(most, r.iterations);
  std::vector<const Result*> runs;
  for (const Result& r : g_results)
    if (same_config(r.config, c) && r.iterations == most) runs.push_back(&r);
  if (runs.empty()) return nullptr;
  std::sort(runs.begin(), runs.end(), [](const Result* a, const Result* b) { return a->step_s < b->step_s; });
  return runs[runs.size() / 2];
}

void print_table() {
  std::vector<Result> medians;
  for (const Result& r : g_results) {
    const bool seen =
        std::any_of(medians.begin(), medians.end(), [&](const Result& m) { return same_config(m.config, r.config); });
    if (!seen) medians.push_back(*median_result(r.config));
  }
  if (medians.empty()) return;
  std::stable_sort(medians.begin(), medians.end(), [](const Result& a, const Result& b) {
    const auto key = [](const Result& r) {
      return std::make_tuple(r.config.mode == "weak" ? 0 : r.config.mode == "strong" ? 1 : 2, r.config.global_batch,
                             r.config.replicas);
    };
    return key(a) < key(b);
  });
  std::printf("\nModel %s. Median over the runs of each configuration (times per step, means over ranks):", g_model.name.c_str());
  std::printf("\n%-11s %8s %7s %12s %9s %11s %8s %10s %11s %8s %7s %9s %8s %8s %9s %7s %7s\n", "mode", "replicas",
              "threads", "global_batch", "step_ms", "samples/s", "speedup", "efficiency", "allreduce%", "alone%",
              "other%", "grad_MiB", "buckets", "bwd_ms", "window_ms", "in_bwd", "hidden%");
  for (const Result& r : medians) {
    // Speedup against the 1-replica run of the same mode (and, for same_cores, the same batch).
    const Result* base = nullptr;
    for (const Result& b : medians)
      if (b.config.mode != "workers" && b.config.mode == r.config.mode && b.config.replicas == 1 &&
          (r.config.mode != "same_cores" || b.config.global_batch == r.config.global_batch))
        base = &b;
    const double speedup = base ? r.samples_per_s / base->samples_per_s : 0.0;
    const double ideal = r.config.mode == "same_cores" ? 1.0 : double(r.config.replicas);
    std::printf("%-11s %8d %7d %12lld %9.3f %11.1f %8.2f %9.0f%% %10.1f%% %7.1f%% %6.1f%% %9.2f %8zu %8.2f %9.2f %7.2f %6.0f%%\n",
                r.config.mode.c_str(), r.config.replicas, r.config.threads, static_cast<long long>(r.config.global_batch),
                r.step_s * 1e3, r.samples_per_s, speedup, base ? 100 * speedup / ideal : 0.0, 100 * r.allreduce_share,
                100 * r.allreduce_alone, 100 * r.other_share, double(r.floats) * sizeof(float) / double(1 << 20),
                r.buckets, r.backward_s * 1e3, r.window_s * 1e3, r.window_in_backward_s * 1e3, 100 * r.hidden_share);
  }
}

void register_benchmarks(int threads, int64_t per_replica_batch, int worker_replicas, int fit_calls) {
  std::vector<Config> configs;
  if (g_workers) {
    const int64_t world = int64_t{worker_replicas} * detect_launch().size;
    const Config c{"workers", worker_replicas, worker_replicas, per_replica_batch * world};
    const std::string name = g_model.name + "/workers:" + std::to_string(detect_launch().size) + "/replicas:" +
                             std::to_string(c.replicas) + "/global_batch:" + std::to_string(c.global_batch);
    benchmark::RegisterBenchmark(name.c_str(), BM_step, c)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->Iterations(fit_calls);
    return;
  }
  if (g_model.name == "cnn") {
    for (int replicas : {1, 2, 4}) configs.push_back({"weak", replicas, replicas, 32 * int64_t{replicas}});
    for (int replicas : {1, 2, 4}) configs.push_back({"strong", replicas, replicas, 128});
    for (int64_t batch : {32, 256})
      for (int replicas : {1, 2}) configs.push_back({"same_cores", replicas, threads, batch});
  } else {
    for (int replicas : {1, 2, 4}) configs.push_back({"weak", replicas, replicas, per_replica_batch * replicas});
  }
  // The cnn's names stay as they were (plot_scaling.py reads them); other models carry a prefix.
  const std::string prefix = g_model.name == "cnn" ? "" : g_model.name + "/";
  for (const Config& c : configs) {
    const std::string name = prefix + c.mode + "/replicas:" + std::to_string(c.replicas) +
                             "/threads:" + std::to_string(c.threads) + "/global_batch:" + std::to_string(c.global_batch);
    benchmark::RegisterBenchmark(name.c_str(), BM_step, c)->UseManualTime()->Unit(benchmark::kMillisecond);
  }
}

}  // namespace
}  // namespace mirror::bench

int main(int argc, char** argv) {
  using namespace mirror::bench;
  try {
    const int threads = take_threads_flag(argc, argv);
    g_model = take_model_flag(argc, argv);
    const int per_replica_batch = take_int_flag(argc, argv, "--per-replica-batch", 0);
    const int worker_replicas = std::max(1, take_int_flag(argc, argv, "--replicas", 1));
    const int fit_calls = std::max(1, take_int_flag(argc, argv, "--fit-calls", 3));
    g_workers = launched_as_workers();
    keep_output_flag_for_chief(argc, argv);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
    benchmark::AddCustomContext("mirror_threads", std::to_string(threads));
    benchmark::AddCustomContext("host_cores", std::to_string(mirror::host_thread_count()));
    benchmark::AddCustomContext("model", g_model.name);
    register_benchmarks(threads, per_replica_batch > 0 ? per_replica_batch : g_model.per_replica_batch, worker_replicas,
                        fit_calls);
    run_benchmarks_reporting_on_chief();
    if (is_chief_worker()) print_table();
    benchmark::Shutdown();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_step_scaling: %s\n", e.what());
    mirror::abort_job_if_multi_worker(1);
    return 1;
  }
}
