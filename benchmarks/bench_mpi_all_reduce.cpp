// Cross-process all-reduce bandwidth of MpiHostCommunicator, run under mpirun (one replica per
// worker unless --replicas), in nccl-tests' columns: size, count, order, time, algbw = size / time,
// busbw = algbw * 2(n-1)/n over the n workers, #wrong against the closed form. Both orders of the
// sums run in the same process, interleaved, so the cost of the bitwise rank order is measured
// against MPI's own all-reduce on the same machine at the same moment. Worker 0 prints the table.
//   mpirun -np 2 build/benchmarks/bench_mpi_all_reduce [--replicas R] [--seconds S]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "mirror/collectives/mpi_host_communicator.hpp"
#include "mirror/collectives/mpi_world.hpp"

using namespace mirror;

namespace {

// fn(r) on one thread per local replica (a failure ends the job: the other workers wait for us).
template <typename Fn>
void on_replicas(int replicas, Fn fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < replicas; ++r) threads.emplace_back([&fn, r] {
      try {
        fn(r);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_mpi_all_reduce: %s\n", e.what());
        abort_job_if_multi_worker(1);
        std::exit(1);
      }
    });
  for (auto& t : threads) t.join();
}

struct Result {
  double time_us = 0;
  int64_t wrong = 0;
};

// Times all-reduces of `count` floats per replica for about `seconds`; checks the last one.
Result measure(MpiHostCommunicator& comm, size_t count, double seconds) {
  const int replicas = comm.size();
  std::vector<std::vector<float>> buffers(static_cast<size_t>(replicas), std::vector<float>(count));
  const auto fill = [&](int r) {
    std::vector<float>& b = buffers[static_cast<size_t>(r)];
    for (size_t i = 0; i < count; ++i) b[i] = float(comm.global_rank(r) + 1);
  };
  // Warm-up, and the number of iterations every worker runs (worker 0's estimate, broadcast).
  std::vector<float> iterations(1, 0.0f);
  on_replicas(replicas, [&](int r) {
    fill(r);
    comm.all_reduce_sum(r, buffers[static_cast<size_t>(r)], "warm-up");
    const auto start = std::chrono::steady_clock::now();
    comm.all_reduce_sum(r, buffers[static_cast<size_t>(r)], "warm-up");
    const double once = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::vector<float> n(1, float(std::max(3.0, std::min(1000.0, seconds / std::max(once, 1e-6)))));
    comm.broadcast(r, n, 0);
    if (r == 0) iterations = n;
  });
  const int n = static_cast<int>(iterations[0]);
  double elapsed = 0;
  on_replicas(replicas, [&](int r) {
    fill(r);
    comm.barrier(r);
    const auto start = std::chrono::steady_clock::now();
    for (int k = 0; k < n; ++k) comm.all_reduce_sum_async(r, buffers[static_cast<size_t>(r)], "timed");
    comm.wait_all(r);
    comm.barrier(r);
    if (r == 0) elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  });
  // After k sums of (g + 1) over every rank the value is ranks(ranks+1)/2 * ranks^(k): check one
  // fresh all-reduce instead.
  Result result{.time_us = elapsed / n * 1e6, .wrong = 0};
  on_replicas(replicas, [&](int r) {
    fill(r);
    comm.all_reduce_sum(r, buffers[static_cast<size_t>(r)], "check");
  });
  const int world = comm.world_size();
  const float expected = float(world * (world + 1) / 2);
  for (const auto& b : buffers)
    for (float v : b) result.wrong += v != expected;
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  int replicas = 1;
  double seconds = 0.3;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--replicas") == 0) replicas = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::atof(argv[i + 1]);
  }
  try {
    MpiWorld& world = MpiWorld::get();
    MpiHostCommunicator rank_order(replicas, CrossWorkerSum::RankOrder), fast(replicas, CrossWorkerSum::Fast);
    const int workers = world.size();
    if (world.rank() == 0) {
      std::printf("# %d workers x %d replicas; busbw = algbw * 2(n-1)/n, n = %d workers\n", workers, replicas, workers);
      std::printf("%12s %10s %10s %10s %9s %9s %7s %12s\n", "size(B)", "count", "order", "time(us)", "algbw", "busbw",
                  "#wrong", "rank/fast");
    }
    bool any_wrong = false;
    for (size_t num_bytes = size_t{4} << 10; num_bytes <= (size_t{64} << 20); num_bytes *= 4) {
      const size_t count = num_bytes / sizeof(float);
      const Result f = measure(fast, count, seconds);
      const Result r = measure(rank_order, count, seconds);
      any_wrong = any_wrong || f.wrong || r.wrong;
      if (world.rank() != 0) continue;
      for (const auto& [name, res] : {std::pair{"fast", f}, std::pair{"rank", r}}) {
        const double algbw = double(num_bytes) / res.time_us / 1e3;  // GB/s
        const double busbw = algbw * 2.0 * (workers - 1) / workers;
        std::printf("%12zu %10zu %10s %10.1f %9.3f %9.3f %7lld", num_bytes, count, name, res.time_us, algbw, busbw,
                    static_cast<long long>(res.wrong));
        if (std::string(name) == "rank") std::printf(" %11.2fx", r.time_us / f.time_us);
        std::printf("\n");
      }
    }
    return any_wrong ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_mpi_all_reduce: %s\n", e.what());
    abort_job_if_multi_worker(1);
    return 1;
  }
}
