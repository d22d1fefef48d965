// All-reduce bandwidth of the host communicator, reported the way nccl-tests reports it: size,
// count, time, algbw = size / time, busbw = algbw * 2(n-1)/n, and #wrong (elements that differ
// from the closed form after one checked all-reduce).
//
// Ranks are the worker threads of a HostStrategy (the threads training runs on); each rank's
// buffer is first touched by its own thread. A benchmark iteration is one Strategy::run() in which
// every rank issues `per_iteration` back-to-back all-reduces after a barrier (enough for about a
// millisecond), so the time is that of the collective, not of waking the workers; rank 0 measures
// it, and since the host all-reduce ends in a barrier, rank 0's end is everybody's end. Google
// Benchmark's Time column is per iteration; the time_us counter is per all-reduce.
//
// This program measures the host communicator only. The NCCL all-reduce over every visible GPU,
// reported the same way, is BM_GpuAllReduce in bench_gpu.cpp (CUDA builds; skipped without a GPU).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include "benchmarks/bench_util.hpp"
#include "benchmarks/ceilings.hpp"
#include "mirror/mirror.hpp"

namespace mirror::bench {
namespace {

int g_threads = 2;         // --threads: cores shared by the ranks
double g_copy_gbps = 0.0;  // memcpy ceiling with g_threads threads
bool g_any_wrong = false;  // makes the exit status 1, so CI notices a wrong result

struct Row {
  int ranks;
  size_t num_bytes;
  double time_us, algbw, busbw, memcpy_gbps;
  int64_t wrong;
};
std::vector<Row> g_rows;  // the last run of each (ranks, size)

// Element i of rank r starts as (r + 1) + (i % 7): never zero, and different along the buffer so a
// slice written to the wrong place is caught. After one all-reduce over n ranks every element is
// n(n+1)/2 + n (i % 7), exact in float32 for these sizes.
float initial_value(int rank, size_t i) { return float(rank + 1) + float(i % 7); }
float expected_sum(int ranks, size_t i) { return float(ranks * (ranks + 1) / 2) + float(ranks) * float(i % 7); }

void BM_all_reduce(benchmark::State& state) {
  const int ranks = static_cast<int>(state.range(0));
  const auto num_bytes = static_cast<size_t>(state.range(1));
  const size_t count = num_bytes / sizeof(float);
  // Each replica gets threads / ranks threads (at least one); the all-reduce itself uses one
  // thread per rank, as in training.
  HostStrategy strategy(ranks, std::max(g_threads, ranks));
  Communicator& comm = strategy.communicator();

  std::vector<AlignedFloats> buffers(static_cast<size_t>(ranks));
  strategy.run([&](int r) {
    auto& buf = buffers[static_cast<size_t>(r)];
    buf = aligned_floats(count);
    for (size_t i = 0; i < count; ++i) buf[i] = initial_value(r, i);
  });
  // Enough collectives per batch that a batch takes about a millisecond or more.
  const int inner = static_cast<int>(std::clamp<size_t>((size_t{16} << 20) / num_bytes, 1, 1000));

  double batch_seconds = 0, total_seconds = 0;
  int64_t collectives = 0;
  const auto batch = [&](int r) {
    std::span<float> data(buffers[static_cast<size_t>(r)].get(), count);
    comm.barrier(r);
    const auto start = Clock::now();
    for (int k = 0; k < inner; ++k) comm.all_reduce_sum(r, data);
    if (r == 0) batch_seconds = seconds_since(start);
  };
  strategy.run(batch);  // warm-up
  for (auto _ : state) {
    strategy.run(batch);
    // An iteration is the whole batch, so Google Benchmark's iteration estimate stays right; the
    // per-collective time is the time_us counter.
    state.SetIterationTime(batch_seconds);
    total_seconds += batch_seconds;
    collectives += inner;
  }
  // Values grew by a factor of n per all-reduce; reset them and check one all-reduce.
  int64_t wrong = 0;
  std::vector<int64_t> wrong_per_rank(static_cast<size_t>(ranks), 0);
  strategy.run([&](int r) {
    float* buf = buffers[static_cast<size_t>(r)].get();
    for (size_t i = 0; i < count; ++i) buf[i] = initial_value(r, i);
    comm.all_reduce_sum(r, {buf, count});
    int64_t bad = 0;
    for (size_t i = 0; i < count; ++i) bad += buf[i] != expected_sum(ranks, i);
    wrong_per_rank[static_cast<size_t>(r)] = bad;
  });
  for (int64_t w : wrong_per_rank) wrong += w;

  state.counters["size"] = benchmark::Counter(double(num_bytes), benchmark::Counter::kDefaults,
                                              benchmark::Counter::kIs1024);
  state.counters["count"] = double(count);
  state.counters["ranks"] = ranks;
  state.counters["per_iteration"] = inner;
  const double time_s = collectives ? total_seconds / double(collectives) : 0.0;  // per all-reduce
  // One rank has nothing to move (the call returns at once), so it gets no bandwidth figures.
  const double algbw = time_s > 0 && ranks > 1 ? double(num_bytes) / time_s * 1e-9 : 0.0;
  const double busbw = algbw * (ranks > 1 ? 2.0 * (ranks - 1) / ranks : 0.0);
  state.counters["time_us"] = time_s * 1e6;
  state.counters["algbw_GBps"] = algbw;
  state.counters["busbw_GBps"] = busbw;
  // Bus bandwidth as a fraction of the memcpy rate of a buffer of the same size with the same
  // threads (so a small buffer is compared with a copy in the same cache level), and of the large
  // memcpy of ceilings().
  const double memcpy_gbps = memcpy_gbps_at(g_threads, double(num_bytes));
  state.counters["memcpy_GBps"] = memcpy_gbps;
  state.counters["busbw_of_memcpy"] = busbw / memcpy_gbps;
  state.counters["busbw_of_large_memcpy"] = busbw / g_copy_gbps;
  state.counters["wrong"] = double(wrong);
  const Row row{ranks, num_bytes, time_s * 1e6, algbw, busbw, memcpy_gbps, wrong};
  auto it = std::find_if(g_rows.begin(), g_rows.end(),
                         [&](const Row& r) { return r.ranks == ranks && r.num_bytes == num_bytes; });
  if (it == g_rows.end()) g_rows.push_back(row);
  else *it = row;
  if (wrong) {
    g_any_wrong = true;
    state.SkipWithError("all-reduce gave wrong values (see the wrong counter)");
  }
}

// nccl-tests' table: one line per (ranks, size).
void print_table() {
  if (g_rows.empty()) return;
  std::printf("\n%5s %12s %10s %12s %9s %9s %11s %8s %7s\n", "ranks", "size(B)", "count", "time(us)", "algbw",
              "busbw", "memcpy", "bus/cpy", "#wrong");
  std::printf("%5s %12s %10s %12s %9s %9s %11s %8s %7s\n", "", "", "(float)", "", "(GB/s)", "(GB/s)", "(GB/s)", "", "");
  for (const Row& r : g_rows) {
    std::printf("%5d %12zu %10zu %12.1f %9.2f %9.2f %11.2f %7.0f%% %7lld\n", r.ranks, r.num_bytes,
                r.num_bytes / sizeof(float), r.time_us, r.algbw, r.busbw, r.memcpy_gbps,
                r.memcpy_gbps > 0 ? 100 * r.busbw / r.memcpy_gbps : 0.0, static_cast<long long>(r.wrong));
  }
}

void register_benchmarks() {
  for (int ranks = 1; ranks <= 4; ++ranks) {
    for (int64_t num_bytes = 4 << 10; num_bytes <= int64_t{256} << 20; num_bytes *= 4) {
      auto* b = benchmark::RegisterBenchmark("all_reduce", BM_all_reduce)
                    ->ArgNames({"ranks", "bytes"})
                    ->Args({ranks, num_bytes})
                    ->UseManualTime()
                    ->Unit(benchmark::kMicrosecond);
      // One rank has nothing to combine (the communicator returns at once), so its time is a few
      // nanoseconds and Google Benchmark would spin millions of batches to fill min_time.
      if (ranks == 1) b->Iterations(100);
    }
  }
}

}  // namespace
}  // namespace mirror::bench

int main(int argc, char** argv) {
  using namespace mirror::bench;
  g_threads = take_threads_flag(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  g_copy_gbps = announce_ceilings(g_threads).copy_gbps;
  register_benchmarks();
  benchmark::RunSpecifiedBenchmarks();
  print_table();
  benchmark::Shutdown();
  return g_any_wrong ? 1 : 0;
}
