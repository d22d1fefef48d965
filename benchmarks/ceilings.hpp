// The machine's measured ceilings: float32 GEMM peak (oneDNN's sgemm) and memory copy bandwidth,
// so every benchmark can print its figures as a fraction of something measured on the same machine
// in the same run. bench_ceilings measures them carefully; ceilings() here measures them quickly
// (under a second) once per thread count and caches them.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace mirror::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Page-aligned float storage, freed with std::free; first touched by whoever fills it.
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using AlignedFloats = std::unique_ptr<float[], FreeDeleter>;

inline AlignedFloats aligned_floats(size_t count) {
  const size_t num_bytes = (count * sizeof(float) + 4095) / 4096 * 4096;
  auto* p = static_cast<float*>(std::aligned_alloc(4096, std::max<size_t>(num_bytes, 4096)));
  if (!p) throw std::bad_alloc();
  return AlignedFloats(p);
}

// One n x n x n sgemm (C = A B) with `threads` OpenMP threads; returns its seconds.
inline double time_sgemm(int threads, int64_t n, const float* a, const float* b, float* c) {
  omp_set_num_threads(threads);  // oneDNN's OpenMP runtime uses the caller's thread count
  const auto start = Clock::now();
  const auto status = dnnl::sgemm('N', 'N', n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
  const double seconds = seconds_since(start);
  if (status != dnnl::status::success) throw std::runtime_error("dnnl::sgemm failed");
  return seconds;
}

// Best sgemm GFLOP/s (2 n^3 flops) over `reps` calls after one warm-up call.
inline double measure_gemm_gflops(int threads, int64_t n, int reps) {
  const auto count = static_cast<size_t>(n * n);
  AlignedFloats a = aligned_floats(count), b = aligned_floats(count), c = aligned_floats(count);
  for (size_t i = 0; i < count; ++i) {
    a[i] = float(i % 13) * 0.01f;
    b[i] = float(i % 7) * 0.02f;
    c[i] = 0.0f;
  }
  time_sgemm(threads, n, a.get(), b.get(), c.get());
  double best = 1e30;
  for (int r = 0; r < reps; ++r) best = std::min(best, time_sgemm(threads, n, a.get(), b.get(), c.get()));
  return 2.0 * double(n) * double(n) * double(n) / best * 1e-9;
}

// Copies num_bytes from src to dst, each of `threads` threads its own contiguous part; seconds.
inline double time_parallel_copy(int threads, const char* src, char* dst, size_t num_bytes) {
  const auto start = Clock::now();
#pragma omp parallel num_threads(threads)
  {
    const auto t = static_cast<size_t>(omp_get_thread_num()), nt = static_cast<size_t>(omp_get_num_threads());
    const size_t part = (num_bytes / nt + 63) / 64 * 64;
    const size_t begin = std::min(num_bytes, t * part), end = std::min(num_bytes, begin + part);
    if (end > begin) std::memcpy(dst + begin, src + begin, end - begin);
  }
  return seconds_since(start);
}

// Best memcpy rate (bytes copied per second, in GB/s = 1e9 B/s) over `reps` copies of a buffer
// far larger than the caches. A copy moves twice that through memory (read + write).
// Source and destination of a timed copy, first touched by the threads that will copy them and
// copied once to warm up.
struct CopyBuffers {
  AlignedFloats src, dst;
  const char* from() const { return reinterpret_cast<const char*>(src.get()); }
  char* to() const { return reinterpret_cast<char*>(dst.get()); }
};

inline CopyBuffers make_copy_buffers(int threads, size_t num_bytes) {
  CopyBuffers b{aligned_floats(num_bytes / sizeof(float)), aligned_floats(num_bytes / sizeof(float))};
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < int64_t(num_bytes / sizeof(float)); ++i) {
    b.src[size_t(i)] = float(i & 255);
    b.dst[size_t(i)] = 0.0f;
  }
  time_parallel_copy(threads, b.from(), b.to(), num_bytes);
  return b;
}

inline double measure_copy_gbps(int threads, size_t num_bytes, int reps) {
  const CopyBuffers buffers = make_copy_buffers(threads, num_bytes);
  const char* s = buffers.from();
  char* d = buffers.to();
  double best = 1e30;
  for (int r = 0; r < reps; ++r) best = std::min(best, time_parallel_copy(threads, s, d, num_bytes));
  return double(num_bytes) / best * 1e-9;
}

struct Ceilings {
  int threads = 0;
  double gemm_gflops = 0;  // float32 GEMM, GFLOP/s
  double copy_gbps = 0;    // memcpy rate: bytes copied per second, GB/s
  // Memory traffic of a copy (bytes read + bytes written), the convention STREAM uses and the
  // one the kernels' GB/s (bytes read + written) are compared with.
  double traffic_gbps() const { return 2.0 * copy_gbps; }
};

// Quick ceilings for `threads` threads (1024^3 sgemm, 128 MiB copy, best of 20; about 0.5 s), measured on
// first use and cached for the rest of the process. Thread-safe.
inline const Ceilings& ceilings(int threads) {
  static std::mutex mutex;
  static std::map<int, Ceilings> cache;
  std::lock_guard lock(mutex);
  auto it = cache.find(threads);
  if (it == cache.end()) {
    Ceilings c;
    c.threads = threads;
    c.gemm_gflops = measure_gemm_gflops(threads, 1024, 20);
    c.copy_gbps = measure_copy_gbps(threads, size_t{128} << 20, 20);
    it = cache.emplace(threads, c).first;
  }
  return it->second;
}

// Rates at a given size, measured warm and repeatedly (until about 64 MiB have moved), so their
// buffers sit in whatever cache level that size fits: a batch-32 op's tensors fit in L2, where
// memory runs several times faster than the large memcpy of ceilings(). Cached per (threads,
// size); tens of milliseconds each. Thread-safe.
namespace detail {
template <typename Pass>
double best_pass_seconds(size_t num_bytes, Pass pass) {
  const int reps = static_cast<int>(std::clamp<size_t>((size_t{64} << 20) / num_bytes, 5, 5000));
  for (int r = 0; r < 3; ++r) pass();
  // The mean of a block of passes (a single small pass is below the clock's resolution), best of 3.
  double best = 1e30;
  for (int block = 0; block < 3; ++block) {
    const auto start = Clock::now();
    for (int r = 0; r < reps; ++r) pass();
    best = std::min(best, seconds_since(start) / reps);
  }
  return best;
}

// The best of `threads` threads and of 1 thread (a small buffer is faster without a parallel
// region's fork and join), so the figure is a ceiling at every size.
inline double cached(std::map<std::pair<int, size_t>, double>& cache, int threads, size_t num_bytes,
                     double (*measure)(int, size_t)) {
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  auto it = cache.find({threads, num_bytes});
  if (it == cache.end()) {
    const double best = std::max(measure(threads, num_bytes), threads > 1 ? measure(1, num_bytes) : 0.0);
    it = cache.emplace(std::make_pair(threads, num_bytes), best).first;
  }
  return it->second;
}

inline size_t round_size(double num_bytes) {
  return std::max<size_t>(4096, static_cast<size_t>(num_bytes) / 64 * 64);
}
}  // namespace detail

// memcpy rate (bytes copied per second, GB/s) of copying `num_bytes` with up to `threads` threads.
inline double memcpy_gbps_at(int threads, double num_bytes) {
  static std::map<std::pair<int, size_t>, double> cache;
  return detail::cached(cache, threads, detail::round_size(num_bytes), [](int t, size_t n) {
    AlignedFloats src = aligned_floats(n / sizeof(float) + 1), dst = aligned_floats(n / sizeof(float) + 1);
    std::memset(src.get(), 1, n);
    std::memset(dst.get(), 0, n);
    auto* s = reinterpret_cast<const char*>(src.get());
    auto* d = reinterpret_cast<char*>(dst.get());
    return double(n) / detail::best_pass_seconds(n, [&] { time_parallel_copy(t, s, d, n); }) * 1e-9;
  });
}

// Memory traffic (read + written, GB/s) of updating `num_bytes` of floats in place (x = x * a + b),
// up to `threads` threads each on its own part: what an element-wise in-place op such as ReLU can
// reach.
inline double inplace_traffic_gbps_at(int threads, double num_bytes) {
  static std::map<std::pair<int, size_t>, double> cache;
  return detail::cached(cache, threads, detail::round_size(num_bytes), [](int t, size_t n) {
    const auto count = static_cast<int64_t>(n / sizeof(float));
    AlignedFloats data = aligned_floats(size_t(count) + 1);
    float* x = data.get();
    for (int64_t i = 0; i < count; ++i) x[i] = 1.0f;
    const auto pass = [&] {
#pragma omp parallel for num_threads(t) schedule(static)
      for (int64_t i = 0; i < count; ++i) x[i] = x[i] * 0.5f + 0.5f;  // stays 1.0: no denormals
    };
    return 2.0 * double(n) / detail::best_pass_seconds(n, pass) * 1e-9;
  });
}

// The memory ceiling (GB/s of bytes read + written) of an op whose tensors take `footprint_bytes`:
// the better of a copy over that footprint (source + destination) and an in-place update of it.
inline double memory_ceiling_gbps_at(int threads, double footprint_bytes) {
  return std::max(2.0 * memcpy_gbps_at(threads, footprint_bytes / 2), inplace_traffic_gbps_at(threads, footprint_bytes));
}

}  // namespace mirror::bench
