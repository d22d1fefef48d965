// Every op of the reference model's training step, alone, through make_host_backend(threads), at
// batch 32 and 256: time, GFLOP/s, GB/s (bytes read + written, counted once each) and their
// fractions of the measured ceilings (ceilings.hpp): of_gemm against the sgemm peak, of_copy
// against the memory ceiling at the op's footprint (the better of a copy and an in-place update
// over as many bytes as the op's tensors, so it sits in the same cache level; of_large_copy is
// against the large memcpy). `roofline` is the larger of of_gemm and
// of_copy: the share of the op's time it would need at the better ceiling, 1.0 = at the ceiling.
// The last benchmarks, step_ops and step_ops_unfused, run one replica's whole step (no all-reduce)
// back to back, as the model does with and without the convolution and pooling fused. A table
// ranked by roofline fraction is printed last, then the step's floor (the step's ops, each at its
// ceiling).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "benchmarks/bench_util.hpp"
#include "benchmarks/ceilings.hpp"
#include "mirror/engine/host/host_backend.hpp"
#include "mirror/mirror.hpp"

namespace mirror::bench {
namespace {

constexpr int64_t kClasses = 10, kFilters = 32, kFlat = 13 * 13 * kFilters;  // 5408
// A step's {loss sum, correct count}, and the running totals with the first bad step after them
// (as model/ keeps them).
constexpr size_t kStatCount = 2, kTotalCount = kStatCount + 1;

Ceilings g_ceilings;
std::unique_ptr<Backend> g_backend;
const ImageSet& images() {
  static const ImageSet set = synthetic_images(60'000);
  return set;
}

// Buffers of one batch of the reference model, filled with plausible values.
struct Tensors {
  explicit Tensors(Backend& b, int64_t batch) : rows(batch) {
    conv = {batch, 28, 28, 1, kFilters, 3, 3};
    pool = {batch, 26, 26, kFilters};
    const auto make = [&](int64_t count, float scale) {
      DeviceBuffer buf = b.allocate(static_cast<size_t>(count) * sizeof(float));
      float* p = buf.as<float>();
      for (int64_t i = 0; i < count; ++i) p[i] = scale * (float((i * 7919) % 1000) / 1000.0f - 0.25f);
      return buf;
    };
    x = make(batch * 784, 1.0f);
    conv_w = make(conv.weight_count(), 0.1f);
    conv_b = make(kFilters, 0.01f);
    conv_y = make(batch * 26 * 26 * kFilters, 1.0f);
    conv_dy = make(batch * 26 * 26 * kFilters, 0.01f);
    conv_dx = make(batch * 784, 0.0f);
    conv_dw = make(conv.weight_count(), 0.0f);
    conv_db = make(kFilters, 0.0f);
    pool_y = make(batch * kFlat, 1.0f);
    argmax = b.allocate(static_cast<size_t>(batch * kFlat));
    std::fill_n(argmax.as<uint8_t>(), batch * kFlat, uint8_t{0});
    pool_dy = make(batch * kFlat, 0.01f);
    dense_w = make(kFlat * kClasses, 0.01f);
    dense_b = make(kClasses, 0.0f);
    probs = make(batch * kClasses, 1.0f);
    dprobs = make(batch * kClasses, 0.0f);
    dense_dw = make(kFlat * kClasses, 0.0f);
    dense_db = make(kClasses, 0.0f);
    labels = b.allocate(static_cast<size_t>(batch) * sizeof(int32_t));
    for (int64_t i = 0; i < batch; ++i) labels.as<int32_t>()[i] = static_cast<int32_t>(i % kClasses);
    params = make(kReferenceParams, 0.01f);
    grads = make(kReferenceParams, 0.001f);
    slots = make(2 * kReferenceParams, 0.0f);  // Adam's m, then v
    stats = make(kStatCount, 0.0f);
    totals = make(kTotalCount, 0.0f);
    totals.as<float>()[2] = -1.0f;  // no non-finite step yet
    indices.resize(static_cast<size_t>(batch));
    for (int64_t i = 0; i < batch; ++i) indices[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7901) % 60'000);
    resident = b.make_resident(images());
  }
  int64_t rows;
  ConvGeometry conv;
  PoolGeometry pool;
  DeviceBuffer x, conv_w, conv_b, conv_y, conv_dy, conv_dx, conv_dw, conv_db, pool_y, argmax, pool_dy, dense_w, dense_b,
      probs, dprobs, dense_dw, dense_db, labels, params, grads, slots, stats, totals;
  std::vector<int32_t> indices;
  std::unique_ptr<ResidentImages> resident;
};

struct Op {
  std::string name;
  std::function<void(Backend&, Tensors&)> run;
  std::function<double(int64_t batch)> flops;  // floating-point operations
  std::function<double(int64_t batch)> bytes;  // bytes read + bytes written
  // Distinct bytes touched, where an op updates a tensor in place (default: `bytes`); the memory
  // ceiling is measured over this many bytes.
  std::function<double(int64_t batch)> footprint = nullptr;
  double footprint_of(int64_t batch) const { return footprint ? footprint(batch) : bytes(batch); }
};

// Element counts of the model's activations per sample.
constexpr double kConvOut = 26 * 26 * kFilters, kPoolOut = kFlat, kIn = 784, kConvW = 9 * kFilters;
double conv_flops(int64_t b) { return 2.0 * double(b) * kConvOut * 9; }

void run_softmax_ce(Backend& be, Tensors& t) {
  be.activation_forward(Activation::Softmax, t.rows, kClasses, t.probs.as<float>(), t.probs.as<float>());
  be.loss({.kind = LossKind::SparseCategoricalCrossentropy, .gradient_through_activation = true}, t.rows, kClasses,
          t.probs.as<float>(), t.labels.as<int32_t>(), 1.0f / float(t.rows), t.dprobs.as<float>(), t.stats.as<float>());
  be.metric({.kind = MetricKind::SparseCategoricalAccuracy}, t.rows, kClasses, t.probs.as<float>(),
            t.labels.as<int32_t>(), t.stats.as<float>() + 1);
}
void run_adam(Backend& be, Tensors& t) {
  t.stats.as<float>()[0] = 1.0f;  // a finite loss, so the update is applied
  be.optimizer_update(kReferenceParams, {.alpha = 1e-3f}, {}, t.stats.as<float>(), t.params.as<float>(),
                      t.grads.as<float>(), t.slots.as<float>());
}

std::vector<Op> reference_ops() {
  std::vector<Op> ops;
  ops.push_back({"gather_batch", [](Backend& be, Tensors& t) {
                   be.gather_batch(*t.resident, t.indices, t.x.as<float>(), t.labels.as<int32_t>());
                 },
                 [](int64_t b) { return double(b) * kIn; },  // one divide per pixel
                 [](int64_t b) { return double(b) * (kIn * (1 + 4) + 4 + 4 + 4); }});
  ops.push_back({"conv_forward", [](Backend& be, Tensors& t) {
                   be.conv2d_forward(t.conv, t.x.as<float>(), t.conv_w.as<float>(), t.conv_b.as<float>(),
                                     t.conv_y.as<float>());
                 },
                 conv_flops, [](int64_t b) { return 4.0 * (double(b) * (kIn + kConvOut) + kConvW + kFilters); }});
  ops.push_back({"conv_relu_forward", [](Backend& be, Tensors& t) {
                   be.conv2d_relu_forward(t.conv, t.x.as<float>(), t.conv_w.as<float>(), t.conv_b.as<float>(),
                                          t.conv_y.as<float>());
                 },
                 [](int64_t b) { return conv_flops(b) + double(b) * kConvOut; },
                 [](int64_t b) { return 4.0 * (double(b) * (kIn + kConvOut) + kConvW + kFilters); }});
  ops.push_back({"relu_forward", [](Backend& be, Tensors& t) {
                   be.activation_forward(Activation::ReLU, t.rows * 26 * 26, kFilters, t.conv_y.as<float>(), t.conv_y.as<float>());
                 },
                 [](int64_t b) { return double(b) * kConvOut; }, [](int64_t b) { return 8.0 * double(b) * kConvOut; },
                 [](int64_t b) { return 4.0 * double(b) * kConvOut; }});
  ops.push_back({"maxpool_forward", [](Backend& be, Tensors& t) {
                   be.max_pool_forward(t.pool, t.conv_y.as<float>(), t.pool_y.as<float>());
                 },
                 [](int64_t b) { return 3.0 * double(b) * kPoolOut; },  // 3 comparisons per output
                 [](int64_t b) { return 4.0 * double(b) * (kConvOut + kPoolOut); }});
  // The two above as one op (the host fuses them): the convolution's output stays in registers;
  // the pooled output and a byte of argmax per pooled element are written.
  ops.push_back({"conv_relu_maxpool_forward", [](Backend& be, Tensors& t) {
                   be.conv2d_max_pool_forward(t.conv, t.pool, true, t.x.as<float>(), t.conv_w.as<float>(),
                                              t.conv_b.as<float>(), t.pool_y.as<float>(), t.argmax.as<uint8_t>());
                 },
                 [](int64_t b) { return conv_flops(b) + double(b) * kConvOut + 3.0 * double(b) * kPoolOut; },
                 [](int64_t b) { return 4.0 * (double(b) * (kIn + kPoolOut) + kConvW + kFilters) + double(b) * kPoolOut; }});
  ops.push_back({"dense_forward", [](Backend& be, Tensors& t) {
                   be.dense_forward(t.rows, kFlat, kClasses, t.pool_y.as<float>(), t.dense_w.as<float>(),
                                    t.dense_b.as<float>(), t.probs.as<float>());
                 },
                 [](int64_t b) { return 2.0 * double(b) * kFlat * kClasses; },
                 [](int64_t b) { return 4.0 * (double(b) * (kFlat + kClasses) + kFlat * kClasses + kClasses); }});
  ops.push_back({"softmax_crossentropy", run_softmax_ce,
                 [](int64_t b) { return 12.0 * double(b) * kClasses; },  // exp, max, sum, scale, gradient
                 [](int64_t b) { return 4.0 * double(b) * (3 * kClasses + 1); },
                 [](int64_t b) { return 4.0 * double(b) * (2 * kClasses + 1); }});
  ops.push_back({"dense_backward", [](Backend& be, Tensors& t) {
                   be.dense_backward(t.rows, kFlat, kClasses, t.pool_y.as<float>(), t.dense_w.as<float>(),
                                     t.dprobs.as<float>(), t.pool_dy.as<float>(), t.dense_dw.as<float>(),
                                     t.dense_db.as<float>());
                 },
                 [](int64_t b) { return 4.0 * double(b) * kFlat * kClasses; },  // dw = x^T dy, dx = dy w^T
                 [](int64_t b) { return 4.0 * (2 * double(b) * kFlat + double(b) * kClasses + 2 * kFlat * kClasses); }});
  ops.push_back({"maxpool_backward", [](Backend& be, Tensors& t) {
                   be.max_pool_backward(t.pool, t.conv_y.as<float>(), t.pool_y.as<float>(), t.pool_dy.as<float>(),
                                        t.conv_dy.as<float>());
                 },
                 [](int64_t b) { return 3.0 * double(b) * kPoolOut; },
                 [](int64_t b) { return 4.0 * double(b) * (2 * kConvOut + 2 * kPoolOut); }});
  ops.push_back({"maxpool_relu_backward", [](Backend& be, Tensors& t) {
                   be.max_pool_relu_backward(t.pool, t.conv_y.as<float>(), t.pool_y.as<float>(), t.pool_dy.as<float>(),
                                             t.conv_dy.as<float>());
                 },
                 [](int64_t b) { return 3.0 * double(b) * kPoolOut + double(b) * kConvOut; },
                 [](int64_t b) { return 4.0 * double(b) * (2 * kConvOut + 2 * kPoolOut); }});
  ops.push_back({"relu_backward", [](Backend& be, Tensors& t) {
                   be.activation_backward(Activation::ReLU, t.rows * 26 * 26, kFilters, nullptr, t.conv_y.as<float>(),
                                          t.conv_dy.as<float>(), t.conv_dy.as<float>());
                 },
                 [](int64_t b) { return double(b) * kConvOut; }, [](int64_t b) { return 12.0 * double(b) * kConvOut; },
                 [](int64_t b) { return 8.0 * double(b) * kConvOut; }});
  ops.push_back({"conv_backward_weights", [](Backend& be, Tensors& t) {
                   be.conv2d_backward_weights(t.conv, t.x.as<float>(), t.conv_dy.as<float>(), t.conv_dw.as<float>(),
                                              t.conv_db.as<float>());
                 },
                 conv_flops, [](int64_t b) { return 4.0 * (double(b) * (kIn + kConvOut) + kConvW + kFilters); }});
  // Pooling's backward, ReLU's derivative and the convolution's weight gradient as one op, from the
  // pooled gradient and forward's argmax (the host fuses them). Counted as the dense weight
  // gradient's arithmetic, which it does (a masked multiply-add per window position and tap).
  ops.push_back({"conv_maxpool_backward", [](Backend& be, Tensors& t) {
                   be.conv2d_max_pool_backward(t.conv, t.pool, t.x.as<float>(), t.conv_w.as<float>(),
                                               t.pool_dy.as<float>(), t.argmax.as<uint8_t>(), t.conv_dw.as<float>(),
                                               t.conv_db.as<float>(), nullptr);
                 },
                 conv_flops,
                 [](int64_t b) { return 4.0 * (double(b) * (kIn + kPoolOut) + kConvW + kFilters) + double(b) * kPoolOut; }});
  // Not part of the reference step (the first layer needs no input gradient); measured for
  // deeper models.
  ops.push_back({"conv_backward_data", [](Backend& be, Tensors& t) {
                   be.conv2d_backward_data(t.conv, t.conv_w.as<float>(), t.conv_dy.as<float>(), t.conv_dx.as<float>());
                 },
                 conv_flops, [](int64_t b) { return 4.0 * (double(b) * (kIn + kConvOut) + kConvW); }});
  ops.push_back({"accumulate_stats", [](Backend& be, Tensors& t) {
                   be.accumulate_stats(kStatCount, t.stats.as<float>(), t.totals.as<float>(), 1);
                 },
                 [](int64_t) { return 2.0; }, [](int64_t) { return 4.0 * (kStatCount + 2 * kTotalCount); }});
  ops.push_back({"adam_update", [](Backend& be, Tensors& t) { run_adam(be, t); },
                 [](int64_t) { return 12.0 * double(kReferenceParams); },
                 [](int64_t) { return 28.0 * double(kReferenceParams); },  // read p g m v, write p m v
                 [](int64_t) { return 16.0 * double(kReferenceParams); }});
  return ops;
}

// The ops of one replica's step in the order the model runs them on the host, without the
// all-reduce: model/plan.cpp fuses the convolution with the pooling after it (and ReLU with
// both), and the loss takes its gradient through the softmax.
const std::vector<std::string> kStepOps = {"gather_batch",   "conv_relu_maxpool_forward", "dense_forward",
                                           "softmax_crossentropy", "dense_backward", "conv_maxpool_backward",
                                           "accumulate_stats", "adam_update"};
// The same step with the convolution and the pooling apart (as a backend that does not fuse them
// runs it: the fused conv+ReLU forward, pooling's backward with ReLU's derivative folded in). Its
// floor is the reference the step is held to, since it does not move when ops are fused; the
// fused step's own floor is printed too.
const std::vector<std::string> kUnfusedStepOps = {"gather_batch",          "conv_relu_forward",    "maxpool_forward",
                                                  "dense_forward",         "softmax_crossentropy", "dense_backward",
                                                  "maxpool_relu_backward", "conv_backward_weights", "accumulate_stats",
                                                  "adam_update"};

bool in_list(const std::vector<std::string>& list, const std::string& name) {
  return std::find(list.begin(), list.end(), name) != list.end();
}

Op step_op(const std::vector<Op>& ops, const std::string& name, const std::vector<std::string>& names) {
  std::vector<Op> step;
  for (const std::string& n : names)
    step.push_back(*std::find_if(ops.begin(), ops.end(), [&](const Op& op) { return op.name == n; }));
  Op whole{name, nullptr, nullptr, nullptr, nullptr};
  whole.run = [step](Backend& be, Tensors& t) {
    for (const Op& op : step) op.run(be, t);
  };
  whole.flops = [step](int64_t b) {
    double sum = 0;
    for (const Op& op : step) sum += op.flops(b);
    return sum;
  };
  whole.bytes = [step](int64_t b) {
    double sum = 0;
    for (const Op& op : step) sum += op.bytes(b);
    return sum;
  };
  // The step's tensors (activations, their gradients, parameters and slots), not the ops' sum.
  whole.footprint = [](int64_t b) {
    return 4.0 * (double(b) * (2 * kIn + 2 * kConvOut + 2 * kPoolOut + 2 * kClasses) + 4.0 * kReferenceParams);
  };
  return whole;
}

struct Row {
  std::string op;
  int64_t batch;
  double us, gflops, gbps, of_gemm, of_copy, copy_ceiling;
};
std::vector<Row> g_rows;  // one per (op, batch): Google Benchmark may call BM_op several times; the last run is reported

void BM_op(benchmark::State& state, const Op& op) {
  const int64_t batch = state.range(0);
  Tensors t(*g_backend, batch);
  for (int i = 0; i < 3; ++i) op.run(*g_backend, t);  // warm-up: oneDNN creates its primitives
  const auto start = Clock::now();
  for (auto _ : state) op.run(*g_backend, t);
  const double seconds = seconds_since(start) / double(std::max<int64_t>(1, state.iterations()));
  const double gflops = op.flops(batch) / seconds * 1e-9, gbps = op.bytes(batch) / seconds * 1e-9;
  const double copy_ceiling = memory_ceiling_gbps_at(g_ceilings.threads, op.footprint_of(batch));
  const double of_gemm = gflops / g_ceilings.gemm_gflops, of_copy = gbps / copy_ceiling;
  state.counters["GFLOPs"] = gflops;
  state.counters["GBps"] = gbps;
  state.counters["of_gemm"] = of_gemm;
  state.counters["of_copy"] = of_copy;
  state.counters["copy_ceiling_GBps"] = copy_ceiling;
  state.counters["of_large_copy"] = gbps / g_ceilings.traffic_gbps();
  state.counters["roofline"] = std::max(of_gemm, of_copy);
  state.counters["samples_per_s"] = double(batch) / seconds;
  const Row row{op.name, batch, seconds * 1e6, gflops, gbps, of_gemm, of_copy, copy_ceiling};
  auto it = std::find_if(g_rows.begin(), g_rows.end(), [&](const Row& r) { return r.op == op.name && r.batch == batch; });
  if (it == g_rows.end()) g_rows.push_back(row);
  else *it = row;
}

void print_table() {
  if (g_rows.empty()) return;
  std::vector<Row> rows = g_rows;
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return std::max(a.of_gemm, a.of_copy) < std::max(b.of_gemm, b.of_copy);
  });
  std::printf("\nOps against the ceilings (sgemm %.1f GFLOP/s; memory: copy or in-place update over the op's "
              "footprint; large copy %.1f GB/s read+write), worst first:\n",
              g_ceilings.gemm_gflops, g_ceilings.traffic_gbps());
  std::printf("%-22s %6s %10s %9s %8s %10s %7s %7s %9s %10s\n", "op", "batch", "time_us", "GFLOP/s", "GB/s", "mem_GB/s",
              "%gemm", "%mem", "roofline", "floor_us");
  for (const Row& r : rows) {
    const double roof = std::max(r.of_gemm, r.of_copy);
    std::printf("%-22s %6lld %10.1f %9.2f %8.2f %10.1f %6.1f%% %6.1f%% %8.1f%% %10.1f\n", r.op.c_str(),
                static_cast<long long>(r.batch), r.us, r.gflops, r.gbps, r.copy_ceiling, 100 * r.of_gemm,
                100 * r.of_copy, 100 * roof, r.us * roof);
  }
  // The step's floor: every op of the step at its better ceiling, against the ops timed one by
  // one and the whole sequence timed at once; for the step as run, and with the ops apart.
  const auto floor_of = [&](const std::vector<std::string>& names, int64_t batch, double& ops_us, double& gemm_us) {
    double floor_us = 0;
    ops_us = gemm_us = 0;
    for (const Row& r : g_rows) {
      if (r.batch != batch || !in_list(names, r.op)) continue;
      ops_us += r.us;
      floor_us += r.us * std::max(r.of_gemm, r.of_copy);
      gemm_us += r.us * r.of_gemm;
    }
    return floor_us;
  };
  const auto time_of = [&](const std::string& op, int64_t batch) {
    for (const Row& r : g_rows)
      if (r.op == op && r.batch == batch) return r.us;
    return 0.0;
  };
  for (int64_t batch : {int64_t{32}, int64_t{256}}) {
    double ops_us = 0, gemm_us = 0, unfused_ops_us = 0, unfused_gemm_us = 0;
    const double floor_us = floor_of(kStepOps, batch, ops_us, gemm_us);
    const double unfused_floor_us = floor_of(kUnfusedStepOps, batch, unfused_ops_us, unfused_gemm_us);
    const double step_us = time_of("step_ops", batch), unfused_step_us = time_of("step_ops_unfused", batch);
    if (step_us > 0 && unfused_floor_us > 0)
      std::printf("batch %3lld: step ops one by one %.1f us, as one sequence %.1f us; the unfused step's floor %.1f us "
                  "(%.1f us of it FLOPs at the sgemm peak): the sequence takes %.2fx that floor; the fused step's own "
                  "floor %.1f us: %.2fx\n",
                  static_cast<long long>(batch), ops_us, step_us, unfused_floor_us, unfused_gemm_us,
                  step_us / unfused_floor_us, floor_us, step_us / floor_us);
    if (unfused_step_us > 0 && unfused_floor_us > 0)
      std::printf("batch %3lld: the unfused step's ops one by one %.1f us, as one sequence %.1f us: %.2fx its floor\n",
                  static_cast<long long>(batch), unfused_ops_us, unfused_step_us, unfused_step_us / unfused_floor_us);
  }
}

}  // namespace
}  // namespace mirror::bench

int main(int argc, char** argv) {
  using namespace mirror::bench;
  const int threads = take_threads_flag(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  g_ceilings = announce_ceilings(threads);
  g_backend = mirror::make_host_backend(threads);
  g_backend->bind_current_thread();  // benchmarks run on this thread
  static std::vector<Op> ops = reference_ops();
  const Op fused_step = step_op(ops, "step_ops", kStepOps), unfused_step = step_op(ops, "step_ops_unfused", kUnfusedStepOps);
  ops.push_back(fused_step);
  ops.push_back(unfused_step);
  for (const Op& op : ops) {
    benchmark::RegisterBenchmark(op.name.c_str(), BM_op, op)
        ->ArgName("batch")
        ->Arg(32)
        ->Arg(256)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }
  benchmark::RunSpecifiedBenchmarks();
  print_table();
  g_backend.reset();
  benchmark::Shutdown();
  return 0;
}
