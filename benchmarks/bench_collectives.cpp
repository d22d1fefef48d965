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
// Launched as several processes (mpirun -np N), it measures the cross-process all-reduce of the
// multi-worker strategy instead: each process is a worker with --replicas host replicas (default 1),
// the ranks are every worker's replicas, and both orders of the sums run, `sums:0` the rank-order
// chain (bitwise one process's sums, the default) and `sums:1` MPI_Iallreduce (--fast-sums), at
// 4 B ... --max-bytes (default 64 MiB, x4 per size) plus any --extra-bytes=B1,B2. Every worker must
// run the same number of collectives, so each size runs a fixed --batches batches (default 5)
// instead of Google Benchmark's min_time; worker 0 prints and writes --benchmark_out.
//
// The NCCL all-reduce over every visible GPU, reported the same way, is BM_GpuAllReduce in
// bench_gpu.cpp (CUDA builds; skipped without a GPU).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "benchmarks/bench_util.hpp"
#include "benchmarks/ceilings.hpp"
#include "mirror/mirror.hpp"

namespace mirror::bench {
namespace {

int g_threads = 2;         // --threads: cores shared by the ranks
double g_copy_gbps = 0.0;  // memcpy ceiling with g_threads threads (host mode)
bool g_any_wrong = false;  // makes the exit status 1, so CI notices a wrong result

// Cross-process mode (launched by mpirun or srun as several workers).
struct CrossProcess {
  bool on = false;
  int workers = 1;
  int replicas = 1;                      // --replicas: per worker
  int batches = 5;                       // --batches: timed batches per size, the same on every worker
  int64_t max_bytes = int64_t{64} << 20;  // --max-bytes
  std::vector<int64_t> extra_bytes;      // --extra-bytes=B1,B2,...
};
CrossProcess g_mpi;

struct Row {
  int ranks, workers;
  int fast;  // cross-process: 0 = rank-order chain, 1 = MPI_Iallreduce; host: 0
  size_t num_bytes;
  double time_us, algbw, busbw, memcpy_gbps;
  int64_t wrong;
};
// Every run of each (ranks, sums, size), in order; the table shows the median run of each (by time),
// so --benchmark_repetitions=N gives medians over N.
std::vector<std::vector<Row>> g_rows;

// Element i of global rank r starts as (r + 1) + (i % 7): never zero, and different along the
// buffer so a slice written to the wrong place is caught. After one all-reduce over n ranks every
// element is n(n+1)/2 + n (i % 7), exact in float32 for these sizes.
float initial_value(int rank, size_t i) { return float(rank + 1) + float(i % 7); }
float expected_sum(int ranks, size_t i) { return float(ranks * (ranks + 1) / 2) + float(ranks) * float(i % 7); }

// The ranks of a benchmark: a HostStrategy's worker threads, or this worker's replicas of a
// multi-worker strategy (the other workers' replicas are the remaining ranks).
std::unique_ptr<Strategy> make_ranks(int ranks, bool fast_sums) {
  if (!g_mpi.on) return std::make_unique<HostStrategy>(ranks, std::max(g_threads, ranks));
  static std::ostringstream quiet;  // the chief's announcement, once per benchmark, is not wanted
  return make_strategy({.kind = "multi-worker", .host_replicas = ranks, .host_threads = ranks, .log = &quiet,
                        .rank_order_sums = !fast_sums});
}

void BM_all_reduce(benchmark::State& state) {
  const int ranks = static_cast<int>(state.range(0));
  const auto num_bytes = static_cast<size_t>(state.range(1));
  const bool fast_sums = g_mpi.on && state.range(2) != 0;
  const size_t count = std::max<size_t>(num_bytes / sizeof(float), 1);
  // Each replica gets threads / ranks threads (at least one); the all-reduce itself uses one
  // thread per rank, as in training.
  std::unique_ptr<Strategy> strategy = make_ranks(ranks, fast_sums);
  Communicator& comm = strategy->communicator();
  const int world = comm.world_size();

  std::vector<AlignedFloats> buffers(static_cast<size_t>(ranks));
  const auto fill = [&](int r) {
    float* buf = buffers[static_cast<size_t>(r)].get();
    for (size_t i = 0; i < count; ++i) buf[i] = initial_value(comm.global_rank(r), i);
  };
  strategy->run([&](int r) {
    buffers[static_cast<size_t>(r)] = aligned_floats(count);  // first touched by its own thread
    fill(r);
  });
  // Enough collectives per batch that a batch takes about a millisecond or more. A size alone
  // decides it, so every worker runs the same number.
  const int inner = static_cast<int>(std::clamp<size_t>((size_t{16} << 20) / num_bytes, 1, 1000));

  double batch_seconds = 0, total_seconds = 0;
  int64_t collectives = 0;
  // The closing barrier makes rank 0's end everybody's end (the host all-reduce ends in one
  // anyway; across workers, the last worker of the chain finishes first).
  const auto batch = [&](int r) {
    std::span<float> data(buffers[static_cast<size_t>(r)].get(), count);
    comm.barrier(r);
    const auto start = Clock::now();
    for (int k = 0; k < inner; ++k) comm.all_reduce_sum(r, data);
    comm.barrier(r);
    if (r == 0) batch_seconds = seconds_since(start);
  };
  strategy->run(batch);  // warm-up
  for (auto _ : state) {
    strategy->run(batch);
    // An iteration is the whole batch, so Google Benchmark's iteration estimate stays right; the
    // per-collective time is the time_us counter.
    state.SetIterationTime(batch_seconds);
    total_seconds += batch_seconds;
    collectives += inner;
  }
  // Values grew by a factor of n per all-reduce; reset them and check one all-reduce.
  std::vector<int64_t> wrong_per_rank(static_cast<size_t>(ranks), 0);
  strategy->run([&](int r) {
    fill(r);
    float* buf = buffers[static_cast<size_t>(r)].get();
    comm.all_reduce_sum(r, {buf, count});
    int64_t bad = 0;
    for (size_t i = 0; i < count; ++i) bad += buf[i] != expected_sum(world, i);
    wrong_per_rank[static_cast<size_t>(r)] = bad;
  });
  int64_t wrong = 0;
  for (int64_t w : wrong_per_rank) wrong += w;

  state.counters["size"] = benchmark::Counter(double(num_bytes), benchmark::Counter::kDefaults,
                                              benchmark::Counter::kIs1024);
  state.counters["count"] = double(count);
  state.counters["ranks"] = world;
  state.counters["workers"] = world / ranks;
  state.counters["per_iteration"] = inner;
  const double time_s = collectives ? total_seconds / double(collectives) : 0.0;  // per all-reduce
  // One rank has nothing to move (the call returns at once), so it gets no bandwidth figures.
  const double algbw = time_s > 0 && world > 1 ? double(num_bytes) / time_s * 1e-9 : 0.0;
  const double busbw = algbw * (world > 1 ? 2.0 * (world - 1) / world : 0.0);
  state.counters["time_us"] = time_s * 1e6;
  state.counters["algbw_GBps"] = algbw;
  state.counters["busbw_GBps"] = busbw;
  // Host mode: bus bandwidth as a fraction of the memcpy rate of a buffer of the same size with
  // the same threads (so a small buffer is compared with a copy in the same cache level), and of
  // the large memcpy of ceilings(). Across processes the ceiling is the transport, not memcpy.
  double memcpy_gbps = 0;
  if (!g_mpi.on) {
    memcpy_gbps = memcpy_gbps_at(g_threads, double(num_bytes));
    state.counters["memcpy_GBps"] = memcpy_gbps;
    state.counters["busbw_of_memcpy"] = busbw / memcpy_gbps;
    state.counters["busbw_of_large_memcpy"] = busbw / g_copy_gbps;
  }
  state.counters["wrong"] = double(wrong);
  const Row row{world, world / ranks, fast_sums, num_bytes, time_s * 1e6, algbw, busbw, memcpy_gbps, wrong};
  auto it = std::find_if(g_rows.begin(), g_rows.end(), [&](const std::vector<Row>& runs) {
    return runs[0].ranks == row.ranks && runs[0].fast == row.fast && runs[0].num_bytes == num_bytes;
  });
  if (it == g_rows.end()) g_rows.push_back({row});
  else it->push_back(row);
  if (wrong) {
    g_any_wrong = true;
    state.SkipWithError("all-reduce gave wrong values (see the wrong counter)");
  }
}

// nccl-tests' table: one line per (ranks, sums, size), its median run.
void print_table() {
  if (g_rows.empty()) return;
  std::printf("\n%5s %7s %4s %12s %10s %5s %5s %12s %9s %9s %9s %8s %7s\n", "ranks", "workers", "sums", "size(B)",
              "count", "type", "redop", "time(us)", "algbw", "busbw", "memcpy", "bus/cpy", "#wrong");
  std::printf("%5s %7s %4s %12s %10s %5s %5s %12s %9s %9s %9s %8s %7s\n", "", "", "", "", "", "", "", "", "(GB/s)",
              "(GB/s)", "(GB/s)", "", "");
  for (std::vector<Row> runs : g_rows) {
    std::sort(runs.begin(), runs.end(), [](const Row& a, const Row& b) { return a.time_us < b.time_us; });
    const Row& r = runs[(runs.size() - 1) / 2];
    std::printf("%5d %7d %4s %12zu %10zu %5s %5s %12.1f %9.3f %9.3f", r.ranks, r.workers,
                g_mpi.on ? (r.fast ? "mpi" : "rank") : "-", r.num_bytes, std::max<size_t>(r.num_bytes / sizeof(float), 1),
                "float", "sum", r.time_us, r.algbw, r.busbw);
    if (r.memcpy_gbps > 0) std::printf(" %9.2f %7.0f%%", r.memcpy_gbps, 100 * r.busbw / r.memcpy_gbps);
    else std::printf(" %9s %8s", "-", "-");
    std::printf(" %7lld\n", static_cast<long long>(r.wrong));
  }
  if (g_mpi.on) std::printf("# sums: rank = the rank-order chain (the default), mpi = MPI_Iallreduce (--fast-sums)\n");
}

void register_one(int ranks, int64_t num_bytes, int fast_sums) {
  auto* b = g_mpi.on ? benchmark::RegisterBenchmark("mpi_all_reduce", BM_all_reduce)
                           ->ArgNames({"replicas", "bytes", "fast"})
                           ->Args({ranks, num_bytes, fast_sums})
                     : benchmark::RegisterBenchmark("all_reduce", BM_all_reduce)
                           ->ArgNames({"ranks", "bytes"})
                           ->Args({ranks, num_bytes});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
  // One rank has nothing to combine (the communicator returns at once), so its time is a few
  // nanoseconds and Google Benchmark would spin millions of batches to fill min_time. Across
  // processes every worker must run as many collectives as the others.
  if (g_mpi.on) b->Iterations(g_mpi.batches);
  else if (ranks == 1) b->Iterations(100);
}

void register_benchmarks() {
  if (!g_mpi.on) {
    for (int ranks = 1; ranks <= 4; ++ranks)
      for (int64_t num_bytes = 4 << 10; num_bytes <= int64_t{256} << 20; num_bytes *= 4) register_one(ranks, num_bytes, 0);
    return;
  }
  std::vector<int64_t> sizes;
  for (int64_t num_bytes = 4; num_bytes <= g_mpi.max_bytes; num_bytes *= 4) sizes.push_back(num_bytes);
  sizes.insert(sizes.end(), g_mpi.extra_bytes.begin(), g_mpi.extra_bytes.end());
  std::sort(sizes.begin(), sizes.end());
  // Both orders of each size one after the other, so the two see the same load.
  for (int64_t num_bytes : sizes)
    for (int fast = 0; fast <= 1; ++fast) register_one(g_mpi.replicas, num_bytes, fast);
}

// Takes the cross-process flags out of argv (accepted, and ignored, in host mode too).
void take_cross_process_flags(int& argc, char** argv) {
  g_mpi.on = launched_as_workers();
  g_mpi.workers = detect_launch().size;
  g_mpi.replicas = std::max(1, take_int_flag(argc, argv, "--replicas", 1));
  g_mpi.batches = std::max(1, take_int_flag(argc, argv, "--batches", 5));
  g_mpi.max_bytes = int64_t{take_int_flag(argc, argv, "--max-bytes", 64 << 20)};
  std::stringstream extra(take_flag(argc, argv, "--extra-bytes", ""));
  for (std::string item; std::getline(extra, item, ',');) {
    char* end = nullptr;
    const long long num_bytes = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || num_bytes < 4) {
      std::fprintf(stderr, "--extra-bytes takes sizes of at least 4 bytes separated by commas, got '%s'\n", item.c_str());
      std::exit(2);
    }
    g_mpi.extra_bytes.push_back(num_bytes);
  }
}

}  // namespace
}  // namespace mirror::bench

int main(int argc, char** argv) {
  using namespace mirror::bench;
  try {
    g_threads = take_threads_flag(argc, argv);
    take_cross_process_flags(argc, argv);
    const bool chief = is_chief_worker();
    keep_output_flag_for_chief(argc, argv);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
    if (!g_mpi.on) g_copy_gbps = announce_ceilings(g_threads).copy_gbps;
    else if (chief) {
      std::printf("Cross-process all-reduce: %d workers x %d replica(s); busbw = algbw * 2(n-1)/n over the n ranks\n",
                  g_mpi.workers, g_mpi.replicas);
      benchmark::AddCustomContext("mirror_workers", std::to_string(g_mpi.workers));
      benchmark::AddCustomContext("mirror_replicas_per_worker", std::to_string(g_mpi.replicas));
    }
    register_benchmarks();
    run_benchmarks_reporting_on_chief();
    if (chief) print_table();
    benchmark::Shutdown();
    return g_any_wrong ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_collectives: %s\n", e.what());
    mirror::abort_job_if_multi_worker(1);
    return 1;
  }
}
