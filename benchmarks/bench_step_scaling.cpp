// Training-step time of the reference CNN (Sequential.fit with steps_per_epoch, Adam, synthetic
// 28x28 images) against the host replica count:
//   weak/     per-replica batch 32, one thread per replica (a replica owns a core, as it would a GPU)
//   strong/   global batch 128, one thread per replica
//   same_cores/  --threads cores in all, split among 1 or 2 replicas (2 x 1 thread vs 1 x 2 threads)
// Counters: step_ms, samples_per_s, and two all-reduce shares of the step:
//   allreduce_share   time rank threads spent inside all_reduce_sum during fit (a timing
//                     decorator around the host communicator), mean over ranks / step time; it
//                     includes waiting for the slowest replica;
//   allreduce_alone   the same all-reduce (the model's gradient buffer, 54,410 parameters padded,
//                     plus the 2 loss statistics) timed alone on the same replicas / step time.
// Speedup and efficiency against the 1-replica run of the same mode are printed last and computed
// by plot_scaling.py from --benchmark_out JSON.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "benchmarks/bench_util.hpp"
#include "collectives/host_communicator.hpp"
#include "engine/host/host_backend.hpp"
#include "mirror.hpp"

namespace mirror::bench {
namespace {

// Forwards to a HostCommunicator and adds the time each rank spends in all_reduce_sum.
class TimedCommunicator final : public Communicator {
 public:
  explicit TimedCommunicator(int size) : inner_(size), nanos_(static_cast<size_t>(size)) {}
  int size() const override { return inner_.size(); }
  void all_reduce_sum(int rank, std::span<float> data, const char* what) override {
    const auto start = Clock::now();
    inner_.all_reduce_sum(rank, data, what);
    nanos_[static_cast<size_t>(rank)] += std::chrono::nanoseconds(Clock::now() - start).count();
    if (rank == 0) last_count_ = data.size();
  }
  void broadcast(int rank, std::span<float> data, int root) override { inner_.broadcast(rank, data, root); }
  void barrier(int rank) override { inner_.barrier(rank); }
  void abort(const std::string& reason) override { inner_.abort(reason); }

  void reset() { std::fill(nanos_.begin(), nanos_.end(), 0); }
  double mean_seconds() const {
    double sum = 0;
    for (int64_t n : nanos_) sum += double(n);
    return sum / double(nanos_.size()) * 1e-9;
  }
  size_t last_count() const { return last_count_; }

 private:
  HostCommunicator inner_;
  std::vector<int64_t> nanos_;  // per rank; each written only by its own rank's thread
  size_t last_count_ = 0;
};

// HostStrategy's replicas (same thread split) with the timing communicator.
class TimedHostStrategy final : public Strategy {
 public:
  TimedHostStrategy(int replicas, int threads) : Strategy("host", backends(replicas, threads)) { start(); }
  TimedCommunicator& timed() { return static_cast<TimedCommunicator&>(communicator()); }

 protected:
  std::unique_ptr<Communicator> make_communicator() override {
    return std::make_unique<TimedCommunicator>(num_replicas());
  }

 private:
  static std::vector<std::unique_ptr<Backend>> backends(int replicas, int threads) {
    std::vector<std::unique_ptr<Backend>> list;
    for (int r = 0; r < replicas; ++r)
      list.push_back(make_host_backend(std::max(1, threads / replicas + (r < threads % replicas ? 1 : 0))));
    return list;
  }
};

struct Config {
  std::string mode;
  int replicas, threads;
  int64_t global_batch;
};

struct Result {
  Config config;
  int64_t iterations;
  double step_s, samples_per_s, allreduce_share, allreduce_alone;
};
std::vector<Result> g_results;  // every run (repetition) of every config

// Seconds of one all-reduce of `count` floats on the strategy's replicas (mean of many, after a
// warm-up), the way a training step issues it.
double time_all_reduce_alone(Strategy& strategy, size_t count) {
  const int n = strategy.num_replicas();
  std::vector<std::vector<float>> bufs(static_cast<size_t>(n));
  const int reps = 200;
  double seconds = 0;
  strategy.run([&](int r) {
    auto& b = bufs[static_cast<size_t>(r)];
    b.assign(count, 1e-6f);
    for (int k = 0; k < 10; ++k) strategy.communicator().all_reduce_sum(r, b);
    strategy.communicator().barrier(r);
    const auto start = Clock::now();
    for (int k = 0; k < reps; ++k) strategy.communicator().all_reduce_sum(r, b);
    if (r == 0) seconds = seconds_since(start) / reps;
  });
  return seconds;
}

void BM_step(benchmark::State& state, Config c) {
  constexpr int64_t kSteps = 20;  // steps per fit() call, so fit's per-call work is amortised
  const ImageSet data = synthetic_images(c.global_batch * kSteps);
  TimedHostStrategy strategy(c.replicas, c.threads);
  Sequential model(reference_layers());
  model.compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()}, 1);
  const FitOptions options{.epochs = 1, .batch_size = c.global_batch, .verbose = 0, .steps_per_epoch = kSteps};
  model.fit(data, options);  // warm-up: buffers, oneDNN primitives, caches

  strategy.timed().reset();
  double seconds = 0;
  int64_t steps = 0;
  for (auto _ : state) {
    const auto start = Clock::now();
    model.fit(data, options);
    const double s = seconds_since(start);
    state.SetIterationTime(s / kSteps);
    seconds += s;
    steps += kSteps;
  }
  const double step_s = seconds / double(steps);
  const double in_all_reduce = strategy.timed().mean_seconds() / double(steps);
  const size_t count = strategy.timed().last_count();
  const double alone = c.replicas > 1 ? time_all_reduce_alone(strategy, count) : 0.0;

  state.counters["replicas"] = c.replicas;
  state.counters["cpu_threads"] = c.threads;
  state.counters["global_batch"] = double(c.global_batch);
  state.counters["step_ms"] = step_s * 1e3;
  state.counters["samples_per_s"] = double(c.global_batch) / step_s;
  state.counters["allreduce_share"] = in_all_reduce / step_s;
  state.counters["allreduce_alone"] = alone / step_s;
  state.counters["allreduce_floats"] = double(count);
  g_results.push_back({c, static_cast<int64_t>(state.iterations()), step_s, double(c.global_batch) / step_s,
                       in_all_reduce / step_s, alone / step_s});
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
  std::printf("\nMedian over the runs of each configuration:");
  std::printf("\n%-11s %8s %7s %12s %9s %13s %8s %10s %12s %12s\n", "mode", "replicas", "threads", "global_batch",
              "step_ms", "samples/s", "speedup", "efficiency", "allreduce%", "alone%");
  for (const Result& r : medians) {
    // Speedup against the 1-replica run of the same mode (and, for same_cores, the same batch).
    const Result* base = nullptr;
    for (const Result& b : medians)
      if (b.config.mode == r.config.mode && b.config.replicas == 1 &&
          (r.config.mode != "same_cores" || b.config.global_batch == r.config.global_batch))
        base = &b;
    const double speedup = base ? r.samples_per_s / base->samples_per_s : 0.0;
    const double ideal = r.config.mode == "same_cores" ? 1.0 : double(r.config.replicas);
    std::printf("%-11s %8d %7d %12lld %9.3f %13.0f %8.2f %9.0f%% %11.1f%% %11.1f%%\n", r.config.mode.c_str(),
                r.config.replicas, r.config.threads, static_cast<long long>(r.config.global_batch), r.step_s * 1e3,
                r.samples_per_s, speedup, base ? 100 * speedup / ideal : 0.0, 100 * r.allreduce_share,
                100 * r.allreduce_alone);
  }
}

void register_benchmarks(int threads) {
  std::vector<Config> configs;
  for (int replicas : {1, 2, 4}) configs.push_back({"weak", replicas, replicas, 32 * int64_t{replicas}});
  for (int replicas : {1, 2, 4}) configs.push_back({"strong", replicas, replicas, 128});
  for (int64_t batch : {32, 256})
    for (int replicas : {1, 2}) configs.push_back({"same_cores", replicas, threads, batch});
  for (const Config& c : configs) {
    const std::string name = c.mode + "/replicas:" + std::to_string(c.replicas) + "/threads:" + std::to_string(c.threads) +
                             "/global_batch:" + std::to_string(c.global_batch);
    benchmark::RegisterBenchmark(name.c_str(), BM_step, c)->UseManualTime()->Unit(benchmark::kMillisecond);
  }
}

}  // namespace
}  // namespace mirror::bench

int main(int argc, char** argv) {
  using namespace mirror::bench;
  const int threads = take_threads_flag(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  benchmark::AddCustomContext("mirror_threads", std::to_string(threads));
  benchmark::AddCustomContext("host_cores", std::to_string(mirror::host_thread_count()));
  register_benchmarks(threads);
  benchmark::RunSpecifiedBenchmarks();
  print_table();
  benchmark::Shutdown();
  return 0;
}
