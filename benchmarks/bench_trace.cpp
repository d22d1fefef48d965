// What tracing a fit costs (FitOptions::trace): the reference CNN's step time with tracing off and
// on (1 and 2 host replicas, one thread each, 32 samples per replica, steps 5-49 of each 50-step
// fit), the cost of one span alone, off (one branch) and on (two clock reads and a store), with
// the spans a step records, so the off cost per step is spans x off cost however noisy the
// machine's step times are; and writing a trace file, which fit does once, when it ends.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "benchmarks/bench_util.hpp"

namespace mirror::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int64_t kStepsPerFit = 50, kFirstTimedStep = 5;

// Times fit's steps [kFirstTimedStep, kStepsPerFit) from the host: the steady state, without what
// fit does once (checks, writing the trace file; write_trace times that).
class StepClock final : public Callback {
 public:
  void on_train_batch_begin(int64_t batch) override {
    if (batch == kFirstTimedStep) begin_ = Clock::now();
  }
  void on_train_batch_end(int64_t batch, const MetricValues* /*logs*/) override {
    if (batch == kStepsPerFit - 1) end_ = Clock::now();
  }
  double seconds_per_step() const {
    return std::chrono::duration<double>(end_ - begin_).count() / double(kStepsPerFit - kFirstTimedStep);
  }

 private:
  Clock::time_point begin_, end_;
};

std::string trace_path() { return (std::filesystem::temp_directory_path() / "mirror_bench_trace.json").string(); }

void BM_fit_step(benchmark::State& state, int replicas, bool trace) {
  const int64_t batch = 32 * int64_t{replicas};
  const ImageSet data = synthetic_images(batch * kStepsPerFit);
  HostStrategy strategy(replicas, replicas);
  Sequential model(reference_layers());
  model.compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()}, 1);
  const auto clock = std::make_shared<StepClock>();
  const FitOptions options{.batch_size = batch, .verbose = 0, .callbacks = {clock}, .steps_per_epoch = kStepsPerFit,
                           .trace = trace ? trace_path() : std::string()};
  model.fit(data, options);  // warm-up: buffers, oneDNN primitives, caches
  const size_t spans = strategy.tracer().recorded();
  for (auto _ : state) {
    model.fit(data, options);
    state.SetIterationTime(clock->seconds_per_step());
  }
  state.counters["replicas"] = replicas;
  state.counters["spans_per_step"] = trace ? double(spans) / double(kStepsPerFit) : 0.0;
  if (trace) std::remove(trace_path().c_str());
}

// One span of a replica's step, the tracer off or on.
void BM_span(benchmark::State& state, bool on) {
  Tracer tracer;
  const int name = tracer.name_id("forward dense", "forward");
  if (on) tracer.start({{"replica 0", "compute"}}, 1 << 16);
  int64_t step = 0;
  for (auto _ : state) {
    const TraceScope span(tracer, 0, name, step++);
    benchmark::ClobberMemory();
    if (on && (step & 0xffff) == 0) {  // room again, untimed
      state.PauseTiming();
      tracer.start({{"replica 0", "compute"}}, 1 << 16);
      state.ResumeTiming();
    }
  }
}

// Writing a trace of `spans` spans on 4 lanes, as fit does when it ends.
void BM_write(benchmark::State& state) {
  Tracer tracer;
  const int name = tracer.name_id("forward dense", "forward");
  const auto spans = static_cast<size_t>(state.range(0));
  tracer.start({{"replica 0", "compute"}, {"replica 0", "all-reduce"}, {"replica 1", "compute"}, {"replica 1", "all-reduce"}},
               spans / 4);
  for (size_t i = 0; i < spans; ++i) {
    const int64_t t = Tracer::now_ns();
    tracer.record(static_cast<int>(i % 4), name, static_cast<int64_t>(i / 4), t, t + 1000);
  }
  for (auto _ : state) tracer.write_chrome_trace(trace_path());
  state.counters["spans"] = double(spans);
  std::remove(trace_path().c_str());
}

}  // namespace
}  // namespace mirror::bench

int main(int argc, char** argv) {
  using namespace mirror::bench;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  benchmark::AddCustomContext("host_cores", std::to_string(mirror::host_thread_count()));
  for (int replicas : {1, 2})
    for (bool trace : {false, true}) {
      const std::string name = std::string("fit_step/replicas:") + std::to_string(replicas) + (trace ? "/trace:on" : "/trace:off");
      // Each iteration is a whole fit (kStepsPerFit steps) timed per step: a fixed count keeps
      // Google Benchmark from sizing the run by the per-step time.
      benchmark::RegisterBenchmark(name.c_str(), BM_fit_step, replicas, trace)
          ->UseManualTime()
          ->Iterations(6)
          ->Unit(benchmark::kMillisecond);
    }
  benchmark::RegisterBenchmark("span/trace:off", BM_span, false);
  benchmark::RegisterBenchmark("span/trace:on", BM_span, true);
  benchmark::RegisterBenchmark("write_trace", BM_write)->Arg(1300)->Unit(benchmark::kMillisecond);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
