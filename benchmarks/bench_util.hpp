// Helpers the benchmark programs share: their own flags (taken out of argv before Google
// Benchmark sees it), the ceilings recorded in the output's context, synthetic images and the
// reference model.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "benchmarks/ceilings.hpp"
#include "mirror.hpp"

namespace mirror::bench {

// Removes `--name=VALUE` or `--name VALUE` from argv and returns VALUE (or `fallback`).
inline std::string take_flag(int& argc, char** argv, const std::string& name, const std::string& fallback) {
  std::string value = fallback;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    int used = 0;
    if (arg.rfind(name + "=", 0) == 0) {
      value = arg.substr(name.size() + 1);
      used = 1;
    } else if (arg == name && i + 1 < argc) {
      value = argv[i + 1];
      used = 2;
    }
    if (used) {
      for (int k = i; k + used < argc; ++k) argv[k] = argv[k + used];
      argc -= used;
      --i;
    }
  }
  return value;
}

inline int take_int_flag(int& argc, char** argv, const std::string& name, int fallback) {
  const std::string v = take_flag(argc, argv, name, "");
  if (v.empty()) return fallback;
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (*end != '\0' || n < 0) {
    std::fprintf(stderr, "%s needs a non-negative integer, got '%s'\n", name.c_str(), v.c_str());
    std::exit(2);
  }
  return static_cast<int>(n);
}

// --threads N (default: every hardware thread), the thread count the program's work uses.
inline int take_threads_flag(int& argc, char** argv) {
  const int threads = take_int_flag(argc, argv, "--threads", 0);
  return threads > 0 ? threads : host_thread_count();
}

// Measures the quick ceilings for `threads`, prints them and records them in the output's
// context (so a JSON file carries the ceilings its fractions were taken against).
inline const Ceilings& announce_ceilings(int threads) {
  const Ceilings& c = ceilings(threads);
  std::printf("Ceilings with %d thread(s): sgemm %.1f GFLOP/s, memcpy %.2f GB/s (%.2f GB/s read+write)\n", threads,
              c.gemm_gflops, c.copy_gbps, c.traffic_gbps());
  benchmark::AddCustomContext("mirror_threads", std::to_string(threads));
  benchmark::AddCustomContext("ceiling_sgemm_gflops", std::to_string(c.gemm_gflops));
  benchmark::AddCustomContext("ceiling_memcpy_gbps", std::to_string(c.copy_gbps));
  return c;
}

using data::synthetic_images;

// The reference job's model: Conv2D(32, 3x3, relu) -> MaxPooling2D(2x2) -> Flatten -> Dense(10,
// softmax), 54,410 parameters.
inline std::vector<LayerPtr> reference_layers() {
  return {layers::Conv2D(32, {3, 3}, Activation::ReLU, Shape{28, 28, 1}), layers::MaxPooling2D({2, 2}),
          layers::Flatten(), layers::Dense(10, Activation::Softmax)};
}

inline constexpr int64_t kReferenceParams = 54'410;

}  // namespace mirror::bench
