// The end-to-end reference job, as train_cnn runs it: Fashion-MNIST (60,000 training images),
// Conv2D(32, 3x3, relu) -> MaxPooling2D(2x2) -> Flatten -> Dense(10, softmax), Adam 1e-3, batch
// 32, shuffled every epoch, then evaluate on the 10,000 test images. Reports epoch seconds,
// training samples/s (fit's own figure, as Keras prints it), evaluation samples/s and the test
// accuracy, for the host strategy with one replica on every core and with one replica per core.
// Flags: --data DIR (default $MIRROR_DATA_DIR, else Debian's fashion-mnist), --epochs N (default 2), --train-samples N
// (default all; a smaller number for a quick run), --threads N, --batch N (global, default 32),
// --model cnn|resnet20|resnet50 (bench_util.hpp; default cnn, the reference job): resnet20 trains
// on the same Fashion-MNIST images; resnet50 on synthetic 224x224x3 images (--train-samples,
// default 32, and 8 test images; its accuracy means nothing), global batch 2 per replica.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <memory>
#include <string>

#include "benchmarks/bench_util.hpp"
#include "mirror/mirror.hpp"

namespace mirror::bench {
namespace {

Dataset g_data;
int g_epochs = 2;
ModelChoice g_model;
int64_t g_batch = 32;  // global; 0 = the model's batch per replica times the replicas

// range(0) = replicas, range(1) = threads in all.
void BM_epoch(benchmark::State& state) {
  const int replicas = static_cast<int>(state.range(0)), threads = static_cast<int>(state.range(1));
  for (auto _ : state) {
    HostStrategy strategy(replicas, threads);
    const int64_t batch = g_batch > 0 ? g_batch : g_model.per_replica_batch * replicas;
    const std::unique_ptr<Model> model = make_model(g_model);
    model->compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()}, 42);
    const History history = model->fit(g_data.train, {.epochs = g_epochs, .batch_size = batch, .seed = 42, .verbose = 0});
    const EvaluateResult test = model->evaluate(g_data.test, {.batch_size = batch, .verbose = 0});
    double seconds = 0, samples_per_s = 0;
    for (const EpochLog& e : history.epochs) {
      seconds += e.seconds;
      samples_per_s += e.samples_per_second;
    }
    const double epochs = double(history.epochs.size());
    state.SetIterationTime(seconds / epochs);
    state.counters["epoch_s"] = seconds / epochs;
    state.counters["samples_per_s"] = samples_per_s / epochs;
    state.counters["last_epoch_samples_per_s"] = history.epochs.back().samples_per_second;
    state.counters["eval_samples_per_s"] = double(g_data.test.count) / test.seconds;
    state.counters["train_accuracy"] = history.epochs.back().accuracy;
    state.counters["test_accuracy"] = test.accuracy;
    state.counters["replicas"] = replicas;
    state.counters["cpu_threads"] = threads;
    state.counters["global_batch"] = double(batch);
  }
}

}  // namespace
}  // namespace mirror::bench

int main(int argc, char** argv) {
  using namespace mirror::bench;
  const int threads = take_threads_flag(argc, argv);
  const std::string dir = take_flag(argc, argv, "--data", mirror::data::default_data_dir().string());
  g_epochs = std::max(1, take_int_flag(argc, argv, "--epochs", 2));
  const int train_samples = take_int_flag(argc, argv, "--train-samples", 0);
  g_model = take_model_flag(argc, argv);
  const bool synthetic = g_model.name == "resnet50";  // Fashion-MNIST is not 224x224x3
  g_batch = take_int_flag(argc, argv, "--batch", synthetic ? 0 : 32);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  if (synthetic) {
    g_data = {model_images(g_model, train_samples > 0 ? train_samples : 32), model_images(g_model, 8, 8)};
  } else {
    try {
      g_data = mirror::data::load_idx_dataset(dir);
    } catch (const mirror::DataError& e) {
      std::fprintf(stderr, "bench_epoch: %s\n", e.what());
      return 1;
    }
    if (train_samples > 0) g_data.train = g_data.train.head(train_samples);
  }
  benchmark::AddCustomContext("model", g_model.name);
  benchmark::AddCustomContext("data", synthetic ? "synthetic" : dir);
  benchmark::AddCustomContext("train_samples", std::to_string(g_data.train.count));
  benchmark::AddCustomContext("epochs", std::to_string(g_epochs));
  // One iteration is the whole job (epochs of fit, then evaluate); there is nothing to average
  // over inside a run, so use --benchmark_repetitions for several.
  const std::string name = g_model.name == "cnn" ? "reference_job" : g_model.name + "_job";
  benchmark::RegisterBenchmark(name.c_str(), BM_epoch)
      ->ArgNames({"replicas", "threads"})
      ->Args({1, threads})
      ->Args({threads, threads})
      ->Iterations(1)
      ->UseManualTime()
      ->Unit(benchmark::kSecond);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
