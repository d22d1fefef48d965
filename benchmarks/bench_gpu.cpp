// GPU benchmarks (CUDA builds; every case reports "no GPU: <why>" and is skipped without one):
//   BM_GpuStep/<strategy>   training-step time of the model of --model cnn|resnet20|resnet50
//                           (bench_util.hpp; default the reference CNN, batch 32 per replica) with
//                           one-device, mirrored over 2 logical replicas of GPU 0, and mirrored
//                           over every visible GPU: samples/s and step time.
//   BM_GpuAllReduce/<bytes> the mirrored strategy's all-reduce over every visible GPU (NCCL; with
//                           one GPU, 2 logical replicas and the device-local reduction), reported
//                           like nccl-tests: algbw, busbw = algbw * 2(n-1)/n, and #wrong against
//                           the closed form of rank-filled buffers.
#include <benchmark/benchmark.h>

#include <memory>
#include <string>
#include <vector>

#include "benchmarks/bench_util.hpp"
#include "mirror/mirror.hpp"

namespace mirror::bench {
namespace {

ModelChoice g_model;

std::vector<Device> gpus_or_skip(benchmark::State& state) {
  auto gpus = list_physical_devices(DeviceKind::GPU);
  if (gpus.empty()) state.SkipWithError(("no GPU: " + gpu_unavailable_reason()).c_str());
  return gpus;
}

std::unique_ptr<Strategy> gpu_strategy(int kind, const std::vector<Device>& gpus) {
  if (kind == 0) return std::make_unique<OneDeviceStrategy>(gpus[0]);
  if (kind == 1) return std::make_unique<MirroredStrategy>(std::vector<Device>{gpus[0]}, 2);
  return std::make_unique<MirroredStrategy>(gpus);
}

void BM_GpuStep(benchmark::State& state) {
  const auto gpus = gpus_or_skip(state);
  if (gpus.empty()) return;
  auto strategy = gpu_strategy(static_cast<int>(state.range(0)), gpus);
  const int64_t batch = g_model.per_replica_batch * strategy->num_replicas();
  const ImageSet data = model_images(g_model, batch * 64);
  const std::unique_ptr<Model> model = make_model(g_model);
  model->compile(*strategy, optimizers::Adam(), {}, {metrics::Accuracy()}, 1);
  model->fit(data, {.epochs = 1, .batch_size = batch, .verbose = 0, .steps_per_epoch = 8});  // warm-up
  constexpr int64_t kSteps = 64;
  double seconds = 0;
  for (auto _ : state) {
    const History h = model->fit(data, {.epochs = 1, .batch_size = batch, .verbose = 0, .steps_per_epoch = kSteps});
    state.SetIterationTime(h.epochs[0].seconds);
    seconds += h.epochs[0].seconds;
  }
  state.SetLabel(strategy->describe());
  state.counters["replicas"] = strategy->num_replicas();
  state.counters["samples_per_s"] =
      benchmark::Counter(double(batch * kSteps) * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["step_us"] = seconds / double(kSteps * static_cast<int64_t>(state.iterations())) * 1e6;
}
BENCHMARK(BM_GpuStep)->ArgName("strategy")->Arg(0)->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMillisecond);

void BM_GpuAllReduce(benchmark::State& state) {
  const auto gpus = gpus_or_skip(state);
  if (gpus.empty()) return;
  const auto count = static_cast<size_t>(state.range(0)) / sizeof(float);
  MirroredStrategy strategy(gpus, gpus.size() == 1 ? 2 : 1);
  const int n = strategy.num_replicas();
  std::vector<DeviceBuffer> buffers(static_cast<size_t>(n));
  const auto fill = [&] {
    strategy.run([&](int r) {
      Backend& b = strategy.backend(r);
      if (!buffers[size_t(r)].data()) buffers[size_t(r)] = b.allocate(count * sizeof(float));
      b.fill(buffers[size_t(r)].as<float>(), count, float(r + 1));
      b.synchronize();
    });
  };
  fill();
  for (auto _ : state) {
    const auto start = Clock::now();
    strategy.run([&](int r) {
      strategy.communicator().all_reduce_sum(r, {buffers[size_t(r)].as<float>(), count});
      strategy.backend(r).synchronize();
    });
    state.SetIterationTime(std::chrono::duration<double>(Clock::now() - start).count());
  }
  // One more on fresh rank-filled buffers, checked against the closed form n(n+1)/2.
  fill();
  std::vector<float> host(count);
  int64_t wrong = 0;
  strategy.run([&](int r) {
    strategy.communicator().all_reduce_sum(r, {buffers[size_t(r)].as<float>(), count});
    if (r == 0) strategy.backend(r).download(buffers[0].data(), host.data(), count * sizeof(float));
  });
  for (float v : host) wrong += v != float(n * (n + 1) / 2);
  const double bytes = double(count * sizeof(float)) * double(state.iterations());
  state.counters["algbw_GBps"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsRate);
  state.counters["busbw_GBps"] = benchmark::Counter(bytes / 1e9 * 2.0 * (n - 1) / n, benchmark::Counter::kIsRate);
  state.counters["ranks"] = n;
  state.counters["wrong"] = double(wrong);
}
BENCHMARK(BM_GpuAllReduce)->RangeMultiplier(16)->Range(4 << 10, 256 << 20)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace mirror::bench

int main(int argc, char** argv) {
  mirror::bench::g_model = mirror::bench::take_model_flag(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  benchmark::AddCustomContext("model", mirror::bench::g_model.name);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
