// What tracing a fit costs (FitOptions::trace): the reference CNN's step time with tracing off and
// on (1 and 2 host replicas, one thread each, 32 samples per replica; "on" includes writing the
// trace file when each fit ends), and the cost of one span alone, off (one branch) and on (two
// clock reads and a store), with the spans a step records, so the off cost per step is
// spans x off cost, however noisy the machine's step times are.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "benchmarks/bench_util.hpp"

namespace mirror::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int64_t kStepsPerFit = 50;

std::string trace_path() { return (std::filesystem::temp_directory_path() / "mirror_bench_trace.json").string(); }

void BM_fit_step(benchmark::State& state, int replicas, bool trace) {
  const int64_t batch = 32 * int64_t{replicas};
  const ImageSet data = synthetic_images(batch * kStepsPerFit);
  HostStrategy strategy(replicas, replicas);
  Sequential model(reference_layers());
  model.compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()}, 1);
  const FitOptions options{.batch_size = batch, .verbose = 0, .steps_per_epoch = kStepsPerFit,
                           .trace = trace ? trace_path() : std::string()};
  model.fit(data, options);  // warm-up: buffers, oneDNN primitives, caches
  const size_t spans = strategy.tracer().recorded();
  for (auto _ : state) {
    const auto start = Clock::now();
    model.fit(data, options);
    state.SetIterationTime(std::chrono::duration<double>(Clock::now() - start).count() / double(kStepsPerFit));
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
      benchmark::RegisterBenchmark(name.c_str(), BM_fit_step, replicas, trace)->UseManualTime()->Unit(benchmark::kMillisecond);
    }
  benchmark::RegisterBenchmark("span/trace:off", BM_span, false);
  benchmark::RegisterBenchmark("span/trace:on", BM_span, true);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
