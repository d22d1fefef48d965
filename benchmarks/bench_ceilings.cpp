// The machine's ceilings, measured carefully: float32 GEMM peak (oneDNN's sgemm, n x n x n) and
// memory copy bandwidth (memcpy of buffers far larger than the caches), with 1 thread and with
// --threads threads. The other programs compare their figures with the quick versions of these
// numbers (ceilings.hpp), printed first; the two should agree within a few percent.
#include <benchmark/benchmark.h>

#include <cstdio>

#include "benchmarks/bench_util.hpp"
#include "benchmarks/ceilings.hpp"

namespace mirror::bench {
namespace {

// range(0) = n, range(1) = threads.
void BM_sgemm(benchmark::State& state) {
  const int64_t n = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  const auto count = static_cast<size_t>(n * n);
  AlignedFloats a = aligned_floats(count), b = aligned_floats(count), c = aligned_floats(count);
  for (size_t i = 0; i < count; ++i) {
    a[i] = float(i % 13) * 0.01f;
    b[i] = float(i % 7) * 0.02f;
    c[i] = 0.0f;
  }
  time_sgemm(threads, n, a.get(), b.get(), c.get());  // warm-up: oneDNN picks and JITs its kernel
  double best = 1e30;
  for (auto _ : state) {
    const double seconds = time_sgemm(threads, n, a.get(), b.get(), c.get());
    state.SetIterationTime(seconds);
    best = std::min(best, seconds);
  }
  const double flops = 2.0 * double(n) * double(n) * double(n);
  state.counters["GFLOPs"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["best_GFLOPs"] = flops / best * 1e-9;
  state.counters["cpu_threads"] = threads;
}

// range(0) = bytes, range(1) = threads. GB/s counts bytes copied (the memcpy rate); the memory
// traffic is twice that.
void BM_memcpy(benchmark::State& state) {
  const auto num_bytes = static_cast<size_t>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const CopyBuffers buffers = make_copy_buffers(threads, num_bytes);
  const char* s = buffers.from();
  char* d = buffers.to();
  double best = 1e30;
  for (auto _ : state) {
    const double seconds = time_parallel_copy(threads, s, d, num_bytes);
    state.SetIterationTime(seconds);
    best = std::min(best, seconds);
  }
  state.counters["copy_GBps"] =
      benchmark::Counter(double(num_bytes) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["best_copy_GBps"] = double(num_bytes) / best * 1e-9;
  state.counters["traffic_GBps"] =
      benchmark::Counter(2.0 * double(num_bytes) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["cpu_threads"] = threads;
}

void register_benchmarks(int threads) {
  std::vector<int64_t> thread_counts = {1};
  if (threads > 1) thread_counts.push_back(threads);
  for (int64_t t : thread_counts) {
    for (int64_t n : {256, 1024, 2048}) {
      benchmark::RegisterBenchmark("sgemm", BM_sgemm)
          ->ArgNames({"n", "threads"})
          ->Args({n, t})
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
    for (int64_t num_bytes : {int64_t{1} << 20, int64_t{16} << 20, int64_t{256} << 20}) {
      benchmark::RegisterBenchmark("memcpy", BM_memcpy)
          ->ArgNames({"bytes", "threads"})
          ->Args({num_bytes, t})
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

}  // namespace
}  // namespace mirror::bench

int main(int argc, char** argv) {
  using namespace mirror::bench;
  const int threads = take_threads_flag(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  announce_ceilings(threads);
  register_benchmarks(threads);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
