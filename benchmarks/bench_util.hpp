// Helpers the benchmark programs share: their own flags (taken out of argv before Google
// Benchmark sees it), the ceilings recorded in the output's context, synthetic images and the
// models the training benchmarks take with --model.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "benchmarks/ceilings.hpp"
#include "mirror/collectives/mpi_world.hpp"
#include "mirror/mirror.hpp"

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

// Launched as several worker processes (mpirun, srun)? Then every worker runs the same benchmarks in
// step, each one collective across the workers, and only the chief (worker 0) reports.
inline bool launched_as_workers() {
  const LaunchInfo launch = detect_launch();
  return launch.launched && launch.size > 1;
}
inline bool is_chief_worker() { return !launched_as_workers() || detect_launch().rank == 0; }

// Google Benchmark's reporter for the workers other than the chief: they run every benchmark in
// step with it and print nothing.
class QuietReporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

// Before benchmark::Initialize: only the chief writes --benchmark_out (the others would truncate
// the file under its feet).
inline void keep_output_flag_for_chief(int& argc, char** argv) {
  if (!is_chief_worker()) take_flag(argc, argv, "--benchmark_out", "");
}

// Runs the registered benchmarks, reporting on the chief only.
inline void run_benchmarks_reporting_on_chief() {
  if (is_chief_worker()) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    QuietReporter quiet;
    benchmark::RunSpecifiedBenchmarks(&quiet);
  }
}

using data::synthetic_images;

// The reference job's model: Conv2D(32, 3x3, relu) -> MaxPooling2D(2x2) -> Flatten -> Dense(10,
// softmax), 54,410 parameters.
inline std::vector<LayerPtr> reference_layers() {
  return {layers::Conv2D(32, {3, 3}, Activation::ReLU, Shape{28, 28, 1}), layers::MaxPooling2D({2, 2}),
          layers::Flatten(), layers::Dense(10, Activation::Softmax)};
}

inline constexpr int64_t kReferenceParams = 54'410;

// The models of --model: "cnn" (the reference CNN above), "resnet20" (CIFAR-style, on 28x28x1
// Fashion-MNIST-shaped images) and "resnet50" (Keras applications' layout on 224x224x3, 1000
// classes, 25.6 M parameters). Batch normalization is per replica, Keras's default under
// MirroredStrategy.
struct ModelChoice {
  std::string name;
  Shape input;
  int32_t classes;
  int64_t per_replica_batch;  // the default batch on each replica for this CPU
};

// Removes --model NAME from argv; exits with a usage message on a name it does not know.
inline ModelChoice take_model_flag(int& argc, char** argv) {
  const std::string name = take_flag(argc, argv, "--model", "cnn");
  if (name == "cnn") return {name, Shape{28, 28, 1}, 10, 32};
  if (name == "resnet20") return {name, Shape{28, 28, 1}, 10, 32};
  if (name == "resnet50") return {name, Shape{224, 224, 3}, 1000, 2};
  std::fprintf(stderr, "--model takes cnn, resnet20 or resnet50, got '%s'\n", name.c_str());
  std::exit(2);
}

inline std::unique_ptr<Model> make_model(const ModelChoice& m) {
  if (m.name == "resnet20") return applications::CifarResNet(20, m.input, m.classes);
  if (m.name == "resnet50") return applications::ResNet50(m.input, m.classes);
  return std::make_unique<Sequential>(reference_layers());
}

// `count` synthetic images of the model's input shape and classes.
inline ImageSet model_images(const ModelChoice& m, int64_t count, uint64_t seed = 7) {
  return synthetic_images(count, m.input[0], m.input[1], m.classes, seed, m.input[2]);
}

}  // namespace mirror::bench
