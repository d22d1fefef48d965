// The CUDA backend against the host backend, op by op, on fresh random inputs: every GPU output is
// poisoned with NaN first, so an element an op forgot to write fails; tolerance |gpu - host| <=
// 1e-4 |host| + 1e-5 max|host| (looser with TF32). Also the shapes training rarely meets (a batch
// of 1, leftover pooling rows, more elements than one launch covers, one backend across batch
// sizes), the collectives with the GPUs present, the memory pool's steady state, and (everywhere)
// the version report. Without a GPU the GPU tests skip, saying why.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <atomic>
#include <chrono>
#include <limits>
#include <random>
#include <span>
#include <thread>
#include <vector>

#include "mirror/collectives/gpu_communicator.hpp"
#include "mirror/collectives/nccl_communicator.hpp"
#include "mirror/engine/cuda/cuda_backend.hpp"
#include "mirror/engine/data/dataset.hpp"
#include "mirror/engine/error.hpp"
#include "mirror/engine/gpu_runtime.hpp"
#include "mirror/engine/host/host_backend.hpp"
#include "backend_comparison.hpp"
#include "test_util.hpp"

namespace mirror {
namespace {

using Floats = std::vector<float>;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

Floats random_floats(size_t count, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  Floats v(count);
  for (float& x : v) x = dist(rng);
  return v;
}

// |gpu - host| <= rtol |host| + scale_atol max|host|, element-wise.
struct Tolerance {
  double rtol = 1e-4;
  double scale_atol = 1e-5;
};

void expect_close(const char* what, const Floats& gpu, const Floats& host, Tolerance tol = {}) {
  ASSERT_EQ(gpu.size(), host.size()) << what;
  double scale = 0;
  for (float h : host) scale = std::max(scale, std::fabs(double(h)));
  size_t bad = 0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    const double diff = std::fabs(double(gpu[i]) - double(host[i]));
    if (diff <= tol.rtol * std::fabs(double(host[i])) + tol.scale_atol * scale) continue;
    if (++bad <= 5) ADD_FAILURE() << what << "[" << i << "]: gpu " << gpu[i] << ", host " << host[i];
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << gpu.size() << " elements differ";
}

using testing::OpCall;  // one op call on a backend from host inputs, outputs poisoned with NaN

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    gpus_ = gpu::list_devices(why);
    if (gpus_.empty()) GTEST_SKIP() << "no GPU: " << why;
    gpu_ = gpu::make_backend(gpus_[0]);
    gpu_->bind_current_thread();
    host_ = make_host_backend(1);
  }

  // Runs `call` on both backends and compares every output.
  void compare(const char* what, const OpCall& call, const std::vector<Floats>& initial = {}, Tolerance tol = {}) {
    const auto on_gpu = call.run(*gpu_, initial);
    const auto on_host = call.run(*host_, initial);
    for (size_t k = 0; k < on_gpu.size(); ++k)
      expect_close((std::string(what) + " output " + std::to_string(k)).c_str(), on_gpu[k], on_host[k], tol);
  }

  // Forward with bias, backward-weights with db, backward-data.
  void check_conv(const ConvGeometry& g, Tolerance tol = {}) {
    SCOPED_TRACE(::testing::Message() << "conv batch " << g.batch << " input " << g.in_h << "x" << g.in_w << "x"
                                      << g.in_c << " -> " << g.out_c);
    const size_t xs = size_t(g.batch * g.in_h * g.in_w * g.in_c), ys = size_t(g.batch * g.out_h() * g.out_w() * g.out_c);
    const size_t ws = size_t(g.weight_count()), bs = size_t(g.out_c);
    OpCall fwd{{random_floats(xs, rng_), random_floats(ws, rng_), random_floats(bs, rng_)}, {ys}, {},
               [g](Backend& b, auto& in, auto& out, int32_t*) { b.conv2d_forward(g, in[0], in[1], in[2], out[0]); }};
    compare("conv2d_forward", fwd, {}, tol);
    OpCall bwd_w{{random_floats(xs, rng_), random_floats(ys, rng_)}, {ws, bs}, {},
                 [g](Backend& b, auto& in, auto& out, int32_t*) {
                   b.conv2d_backward_weights(g, in[0], in[1], out[0], out[1]);
                 }};
    compare("conv2d_backward_weights", bwd_w, {}, tol);
    OpCall bwd_x{{random_floats(ws, rng_), random_floats(ys, rng_)}, {xs}, {},
                 [g](Backend& b, auto& in, auto& out, int32_t*) { b.conv2d_backward_data(g, in[0], in[1], out[0]); }};
    compare("conv2d_backward_data", bwd_x, {}, tol);
  }

  // Forward and backward on inputs with many ties: the first maximum of a window must win.
  void check_pool(const PoolGeometry& g) {
    SCOPED_TRACE(::testing::Message() << "pool batch " << g.batch << " input " << g.in_h << "x" << g.in_w << "x"
                                      << g.channels << " window " << g.pool_h << "x" << g.pool_w << " stride "
                                      << g.stride_h << "x" << g.stride_w);
    const size_t xs = size_t(g.batch * g.in_h * g.in_w * g.channels);
    const size_t ys = size_t(g.batch * g.out_h() * g.out_w() * g.channels);
    Floats x = random_floats(xs, rng_);
    for (float& v : x) v = std::round(v * 2.0f) / 2.0f;  // five levels: many ties
    OpCall fwd{{x}, {ys}, {}, [g](Backend& b, auto& in, auto& out, int32_t*) { b.max_pool_forward(g, in[0], out[0]); }};
    compare("max_pool_forward", fwd);
    const Floats y = fwd.run(*host_)[0];
    OpCall bwd{{x, y, random_floats(ys, rng_)}, {xs}, {},
               [g](Backend& b, auto& in, auto& out, int32_t*) { b.max_pool_backward(g, in[0], in[1], in[2], out[0]); }};
    compare("max_pool_backward", bwd);
  }

  // Forward with bias; backward with and without dx.
  void check_dense(int64_t rows, int64_t in, int64_t out, Tolerance tol = {}) {
    SCOPED_TRACE(::testing::Message() << "dense " << rows << " rows, " << in << " -> " << out);
    OpCall fwd{{random_floats(size_t(rows * in), rng_), random_floats(size_t(in * out), rng_),
                random_floats(size_t(out), rng_)},
               {size_t(rows * out)}, {},
               [=](Backend& b, auto& i, auto& o, int32_t*) { b.dense_forward(rows, in, out, i[0], i[1], i[2], o[0]); }};
    compare("dense_forward", fwd, {}, tol);
    const std::vector<Floats> inputs{random_floats(size_t(rows * in), rng_), random_floats(size_t(in * out), rng_),
                                     random_floats(size_t(rows * out), rng_)};
    OpCall bwd{inputs, {size_t(rows * in), size_t(in * out), size_t(out)}, {},
               [=](Backend& b, auto& i, auto& o, int32_t*) {
                 b.dense_backward(rows, in, out, i[0], i[1], i[2], o[0], o[1], o[2]);
               }};
    compare("dense_backward", bwd, {}, tol);
    OpCall bwd_no_dx{inputs, {size_t(in * out), size_t(out)}, {}, [=](Backend& b, auto& i, auto& o, int32_t*) {
                       b.dense_backward(rows, in, out, i[0], i[1], i[2], nullptr, o[0], o[1]);
                     }};
    compare("dense_backward without dx", bwd_no_dx, {}, tol);
  }

  std::vector<Device> gpus_;
  std::unique_ptr<Backend> gpu_, host_;
  std::mt19937 rng_{20240611};
};

TEST_F(CudaBackendTest, Conv2d) {
  for (ConvGeometry g : {ConvGeometry{3, 9, 7, 2, 4, 3, 2, 1, 1}, ConvGeometry{2, 28, 28, 1, 32, 3, 3, 1, 1},
                         ConvGeometry{2, 11, 10, 3, 5, 3, 3, 2, 3},
                         // a batch of 1 (the last partial batch of a replica) and 32 -> 64 channels,
                         // for which cuDNN chooses other algorithms than for one input channel
                         ConvGeometry{1, 28, 28, 1, 32, 3, 3, 1, 1}, ConvGeometry{4, 13, 13, 32, 64, 3, 3, 1, 1},
                         ConvGeometry{1, 13, 13, 32, 64, 3, 3, 1, 1}})
    check_conv(g);
}

// A null bias is allowed on the GPU (the host backend always takes one: it gets zeros here).
TEST_F(CudaBackendTest, Conv2dWithoutBias) {
  for (ConvGeometry g : {ConvGeometry{1, 28, 28, 1, 32, 3, 3, 1, 1}, ConvGeometry{4, 13, 13, 32, 64, 3, 3, 1, 1}}) {
    SCOPED_TRACE(::testing::Message() << "batch " << g.batch << ", " << g.in_c << " -> " << g.out_c << " channels");
    const size_t xs = size_t(g.batch * g.in_h * g.in_w * g.in_c), ys = size_t(g.batch * g.out_h() * g.out_w() * g.out_c);
    const size_t ws = size_t(g.weight_count()), bs = size_t(g.out_c);
    const Floats x = random_floats(xs, rng_), w = random_floats(ws, rng_), dy = random_floats(ys, rng_);
    OpCall fwd{{x, w}, {ys}, {}, [g](Backend& b, auto& in, auto& out, int32_t*) {
                 b.conv2d_forward(g, in[0], in[1], nullptr, out[0]);
               }};
    OpCall fwd_zero_bias{{x, w, Floats(bs, 0.0f)}, {ys}, {}, [g](Backend& b, auto& in, auto& out, int32_t*) {
                           b.conv2d_forward(g, in[0], in[1], in[2], out[0]);
                         }};
    expect_close("conv2d_forward without bias", fwd.run(*gpu_)[0], fwd_zero_bias.run(*host_)[0]);
    OpCall bwd_w{{x, dy}, {ws}, {}, [g](Backend& b, auto& in, auto& out, int32_t*) {
                   b.conv2d_backward_weights(g, in[0], in[1], out[0], nullptr);
                 }};
    OpCall bwd_w_and_b{{x, dy}, {ws, bs}, {}, [g](Backend& b, auto& in, auto& out, int32_t*) {
                         b.conv2d_backward_weights(g, in[0], in[1], out[0], out[1]);
                       }};
    expect_close("conv2d_backward_weights without db", bwd_w.run(*gpu_)[0], bwd_w_and_b.run(*host_)[0]);
  }
}

TEST_F(CudaBackendTest, MaxPoolFirstMaximum) {
  for (PoolGeometry g : {PoolGeometry{2, 26, 26, 32, 2, 2, 2, 2}, PoolGeometry{3, 7, 9, 3, 3, 3, 2, 2},
                         PoolGeometry{1, 5, 6, 2, 2, 3, 1, 1},
                         // leftover rows and columns that no window covers: their dx must be 0
                         PoolGeometry{2, 27, 27, 32, 2, 2, 2, 2}, PoolGeometry{3, 7, 5, 4, 2, 2, 2, 2},
                         PoolGeometry{1, 10, 11, 3, 3, 3, 3, 3}})
    check_pool(g);
}

TEST_F(CudaBackendTest, Dense) {
  for (auto [rows, in, out] : {std::array<int64_t, 3>{32, 5408, 10}, {7, 13, 5}, {1, 3, 1}}) check_dense(rows, in, out);
}

// Cached convolution plans, the workspace and the scratch buffers of one backend must follow the
// batch size down and up again (a replica's share changes at the last partial batch).
TEST_F(CudaBackendTest, OneBackendAcrossBatchSizes) {
  for (int64_t batch : {3, 1, 3}) {
    check_conv({batch, 12, 12, 1, 8, 3, 3, 1, 1});
    check_pool({batch, 10, 10, 8, 2, 2, 2, 2});
    check_dense(batch, 200, 10);
  }
}

// Kernels launch at most 2^16 blocks of 256 threads (2^24) and loop over the rest: every element
// beyond the first 2^24 must be written too.
TEST_F(CudaBackendTest, GridStrideLoopsCoverMoreThan2To24Elements) {
  const size_t n = (size_t{1} << 24) + (size_t{1} << 20) + 3;
  OpCall fill{{}, {n}, {}, [n](Backend& b, auto&, auto& o, int32_t*) { b.fill(o[0], n, 0.25f); }};
  expect_close("fill", fill.run(*gpu_)[0], Floats(n, 0.25f));
  const int64_t cols = 16, rows = int64_t(n) / cols + 1;  // rows * cols > n
  const size_t count = size_t(rows * cols);
  OpCall relu{{}, {count}, {}, [=](Backend& b, auto&, auto& o, int32_t*) {
                b.activation_forward(Activation::ReLU, rows, cols, o[0], o[0]);
              }};
  compare("relu", relu, {random_floats(count, rng_)});
  const OptimizerStep adam{.alpha = 0.001f};
  OpCall a{{Floats{0.5f, 3.0f}, random_floats(n, rng_)}, {n, 2 * n}, {}, [=](Backend& b, auto& i, auto& o, int32_t*) {
             b.optimizer_update(n, adam, {}, i[0], o[0], i[1], o[1]);
           }};
  Floats slots = random_floats(n, rng_);
  const Floats v = random_floats(n, rng_, 0.0f, 1.0f);
  slots.insert(slots.end(), v.begin(), v.end());
  compare("adam", a, {random_floats(n, rng_), slots});
}

// MIRROR_ALLOW_TF32=1 lets cuBLAS and cuDNN round products' inputs to TF32 (10-bit mantissa): the
// results stay within 1e-2 |host| + 3e-3 max|host| of float32 for sums of up to thousands of terms.
TEST_F(CudaBackendTest, Tf32AllowedStaysCloseToFloat32) {
  testing::ScopedEnv allow("MIRROR_ALLOW_TF32", "1");
  ASSERT_TRUE(cuda::tf32_allowed());
  gpu_ = gpu::make_backend(gpus_[0]);  // a backend reads the variable when it is constructed
  gpu_->bind_current_thread();
  const Tolerance tf32{1e-2, 3e-3};
  check_conv({2, 28, 28, 1, 32, 3, 3, 1, 1}, tf32);
  check_conv({4, 13, 13, 32, 64, 3, 3, 1, 1}, tf32);
  check_dense(32, 5408, 10, tf32);
}

TEST_F(CudaBackendTest, Activations) {
  const int64_t rows = 37, cols = 10;
  const size_t n = size_t(rows * cols);
  for (Activation act : {Activation::Linear, Activation::ReLU, Activation::Softmax}) {
    SCOPED_TRACE(to_string(act));
    const Floats z = random_floats(n, rng_, -4.0f, 4.0f);
    OpCall fwd{{}, {n}, {}, [=](Backend& b, auto&, auto& o, int32_t*) { b.activation_forward(act, rows, cols, o[0], o[0]); }};
    compare("activation_forward", fwd, {z});
    const Floats y = fwd.run(*host_, {z})[0];
    OpCall bwd{{y}, {n}, {},
               [=](Backend& b, auto& i, auto& o, int32_t*) { b.activation_backward(act, rows, cols, nullptr, i[0], o[0], o[0]); }};
    compare("activation_backward", bwd, {random_floats(n, rng_)});
  }
}

TEST_F(CudaBackendTest, CrossEntropyAccumulatesOnDevice) {
  for (int64_t rows : {1, 32, 1000}) {
    const int64_t classes = 10;
    Floats probs = random_floats(size_t(rows * classes), rng_, -3.0f, 3.0f);
    host_->activation_forward(Activation::Softmax, rows, classes, probs.data(), probs.data());  // host memory is the host's "device"
    probs[0] = 0.0f;  // clipped: no gradient through the probability path
    std::vector<int32_t> labels(static_cast<size_t>(rows));
    for (auto& l : labels) l = int32_t(rng_() % classes);
    labels[0] = 0;
    for (bool from_logits : {true, false}) {
      OpCall call{{probs}, {size_t(rows * classes), 2}, labels, [=](Backend& b, auto& i, auto& o, int32_t* l) {
                    b.loss({.gradient_through_activation = from_logits}, rows, classes, i[0], l, 0.25f, o[0], o[1]);
                    b.metric({}, rows, classes, i[0], l, o[1] + 1);
                  }};
      compare("cross-entropy", call, {Floats(size_t(rows * classes), kNaN), Floats{1.5f, 2.0f}});
      OpCall stats_only{{probs}, {2}, labels, [=](Backend& b, auto& i, auto& o, int32_t* l) {
                          b.loss({.gradient_through_activation = from_logits}, rows, classes, i[0], l, 1.0f, nullptr, o[0]);
                          b.metric({}, rows, classes, i[0], l, o[0] + 1);
                        }};
      compare("cross-entropy stats", stats_only, {Floats{0.0f, 0.0f}});
    }
  }
}

// Every rule with every option that changes the pass (slots, clipping, decay by variable), against
// the host's pass; a NaN loss must leave everything untouched.
TEST_F(CudaBackendTest, OptimizersAndTheirSkip) {
  const size_t n = 100003;
  const Floats p = random_floats(n, rng_), g = random_floats(n, rng_);
  // Three variables; the bounds travel as the bits of int64s in a float buffer.
  const std::vector<int64_t> bounds = {0, 7, 50000, int64_t(n)};
  Floats bound_bits(bounds.size() * 2);
  std::memcpy(bound_bits.data(), bounds.data(), bounds.size() * sizeof(int64_t));
  const Floats decay = {1.0f, 0.0f, 1.0f};
  const std::vector<OptimizerStep> steps = {
      {.rule = OptimizerRule::Adam, .alpha = 0.001f},
      {.rule = OptimizerRule::Adam, .alpha = 0.001f, .amsgrad = true, .weight_decay = 0.004f},
      {.rule = OptimizerRule::SGD, .learning_rate = 0.01f},
      {.rule = OptimizerRule::SGD, .learning_rate = 0.01f, .momentum = 0.9f, .nesterov = true, .clipvalue = 0.5f},
      {.rule = OptimizerRule::RMSprop, .learning_rate = 0.001f, .beta2 = 0.9f},
      {.rule = OptimizerRule::RMSprop, .learning_rate = 0.001f, .beta2 = 0.9f, .momentum = 0.5f, .centered = true}};
  for (float loss : {0.7f, kNaN}) {
    for (const OptimizerStep& step : steps) {
      for (bool global : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "loss " << loss << " rule " << int(step.rule) << " global " << global);
        const size_t slots = size_t(optimizer_slot_count(step)) * n;
        OpCall call{{Floats{loss, 3.0f}, g, bound_bits, decay}, {n, std::max<size_t>(slots, 1), 3}, {},
                    [=](Backend& b, auto& i, auto& o, int32_t*) {
                      ParameterSegments segments{.count = 3, .bounds = reinterpret_cast<const int64_t*>(i[2])};
                      b.clip_scales(segments, i[1], 40.0f, global, o[2]);
                      segments.grad_scales = o[2];
                      segments.decay = i[3];
                      b.optimizer_update(n, step, segments, i[0], o[0], i[1], slots ? o[1] : nullptr);
                    }};
        const std::vector<Floats> start = {p, random_floats(std::max<size_t>(slots, 1), rng_, 0.0f, 1.0f), Floats(3)};
        const auto out = call.run(*gpu_, start);
        const auto ref = call.run(*host_, start);
        for (size_t k = 0; k < 3; ++k) expect_close("optimizer", out[k], ref[k]);
        if (std::isnan(loss)) expect_close("skipped", out[0], p);
      }
    }
  }
}

TEST_F(CudaBackendTest, GatherBatchAndMemoryOps) {
  ImageSet images;
  images.count = 50, images.height = 4, images.width = 3, images.channels = 2;
  for (int64_t i = 0; i < images.count * images.sample_size(); ++i) images.pixels.push_back(uint8_t(rng_() % 256));
  for (int64_t i = 0; i < images.count; ++i) images.labels.push_back(int32_t(rng_() % 10));
  const auto resident_gpu = gpu_->make_resident(images);
  const auto resident_host = host_->make_resident(images);
  for (int round = 0; round < 3; ++round) {  // reuses the staging slots
    std::vector<int32_t> indices(size_t(17 + round));
    for (auto& i : indices) i = int32_t(rng_() % images.count);
    const size_t xs = indices.size() * size_t(images.sample_size());
    OpCall call{{}, {xs, indices.size()}, {}, [&](Backend& b, auto&, auto& o, int32_t*) {
                  b.gather_batch(&b == gpu_.get() ? *resident_gpu : *resident_host, indices, o[0],
                                 reinterpret_cast<int32_t*>(o[1]));
                }};
    const auto got = call.run(*gpu_), want = call.run(*host_);
    expect_close("gathered x", got[0], want[0]);
    EXPECT_EQ(0, std::memcmp(got[1].data(), want[1].data(), indices.size() * sizeof(int32_t))) << "labels";
  }
  std::vector<int32_t> bad{3, int32_t(images.count)};
  DeviceBuffer x = gpu_->allocate(2 * size_t(images.sample_size()) * sizeof(float)), l = gpu_->allocate(8);
  EXPECT_THROW(gpu_->gather_batch(*resident_gpu, bad, x.as<float>(), l.as<int32_t>()), InvalidArgument);

  const Floats src = random_floats(1000, rng_);
  OpCall copy{{src}, {1000, 10}, {}, [](Backend& b, auto& i, auto& o, int32_t*) {
                b.copy(i[0], o[0], 1000);
                b.fill(o[1], 10, 2.5f);
              }};
  const auto out = copy.run(*gpu_);
  expect_close("copy", out[0], src);
  expect_close("fill", out[1], Floats(10, 2.5f));
  // Zero rows: nothing happens, even with null pointers.
  gpu_->dense_forward(0, 3, 4, nullptr, nullptr, nullptr, nullptr);
  gpu_->loss({}, 0, 10, nullptr, nullptr, 1.0f, nullptr, nullptr);
  gpu_->synchronize();
}

TEST_F(CudaBackendTest, PoolStopsAllocatingAfterFirstStep) {
  const ConvGeometry g{8, 28, 28, 1, 32, 3, 3, 1, 1};
  const auto step = [&] {
    DeviceBuffer x = gpu_->allocate(size_t(8 * 28 * 28) * 4), w = gpu_->allocate(size_t(g.weight_count()) * 4);
    DeviceBuffer b = gpu_->allocate(32 * 4), y = gpu_->allocate(size_t(8 * 26 * 26 * 32) * 4);
    gpu_->fill(x.as<float>(), x.count(), 0.5f);
    gpu_->fill(w.as<float>(), w.count(), 0.1f);
    gpu_->fill(b.as<float>(), b.count(), 0.0f);
    gpu_->conv2d_forward(g, x.as<float>(), w.as<float>(), b.as<float>(), y.as<float>());
    gpu_->conv2d_backward_weights(g, x.as<float>(), y.as<float>(), w.as<float>(), b.as<float>());
    gpu_->synchronize();
  };
  step();
  step();
  const size_t after_warmup = cuda::memory_stats(gpus_[0].index).device_allocations;
  for (int i = 0; i < 3; ++i) step();
  EXPECT_EQ(cuda::memory_stats(gpus_[0].index).device_allocations, after_warmup);
}

// ---- collectives ----

// Rank r holds (r + 1) * (1 + i % 5) at index i, so the sum, n (n + 1) / 2 * (1 + i % 5), differs
// from every rank's input once there are two ranks or more: an all-reduce that did nothing, or
// that kept one rank's data, fails.
Floats rank_fill(size_t rank, size_t count) {
  Floats v(count);
  for (size_t i = 0; i < count; ++i) v[i] = float(rank + 1) * float(1 + i % 5);
  return v;
}

// All-reduces rank_fill over `backends` (one thread per rank, as the strategies do: each call
// blocks until its collective is done) and checks the closed form on every rank.
void check_all_reduce(Communicator& comm, const std::vector<Backend*>& backends, size_t count) {
  ASSERT_GE(backends.size(), 2u) << "one rank's all-reduce is the identity: a no-op would pass";
  std::vector<DeviceBuffer> data;
  for (size_t r = 0; r < backends.size(); ++r) {
    backends[r]->bind_current_thread();
    data.push_back(backends[r]->allocate(count * sizeof(float)));
    const Floats input = rank_fill(r, count);
    backends[r]->upload(input.data(), data.back().data(), count * sizeof(float));
    backends[r]->synchronize();
  }
  std::vector<std::thread> threads;
  for (size_t r = 0; r < backends.size(); ++r)
    threads.emplace_back([&, r] {
      backends[r]->bind_current_thread();
      comm.all_reduce_sum(int(r), {data[r].as<float>(), count}, "test");
      comm.barrier(int(r));
    });
  for (auto& t : threads) t.join();
  const size_t n = backends.size();
  Floats expected(count);
  for (size_t i = 0; i < count; ++i) expected[i] = float(n * (n + 1) / 2) * float(1 + i % 5);
  for (size_t r = 0; r < n; ++r) {
    Floats out(count);
    backends[r]->download(data[r].data(), out.data(), count * sizeof(float));
    expect_close(("all-reduced on rank " + std::to_string(r)).c_str(), out, expected, {0, 0});
  }
}

TEST_F(CudaBackendTest, NcclAllReduceAcrossVisibleGpus) {
  if (gpus_.size() < 2)
    GTEST_SKIP() << "needs 2 GPUs, " << gpus_.size() << " visible: NCCL refuses two ranks on one GPU, and one rank's "
                 << "all-reduce is the identity (AllReduceAmongLogicalReplicasOfOneGpu covers one GPU)";
  std::vector<std::unique_ptr<Backend>> owned;
  std::vector<Backend*> backends;
  for (const Device& d : gpus_) {
    owned.push_back(gpu::make_backend(d));
    backends.push_back(owned.back().get());
  }
  NcclCommunicator comm(backends);
  ASSERT_EQ(comm.size(), int(gpus_.size()));
  check_all_reduce(comm, backends, 1001);
  comm.abort("test abort");
  DeviceBuffer data = backends[0]->allocate(4 * sizeof(float));
  EXPECT_THROW(comm.all_reduce_sum(0, {data.as<float>(), 4}), CollectiveError);
}

// Replicas sharing GPU 0 reduce with a kernel, not NCCL: testable with one GPU. 1001 floats do not
// split evenly over 2 or 3 replicas.
TEST_F(CudaBackendTest, AllReduceAmongLogicalReplicasOfOneGpu) {
  for (int replicas : {2, 3}) {
    SCOPED_TRACE(::testing::Message() << replicas << " replicas on GPU 0");
    std::vector<std::unique_ptr<Backend>> owned;
    std::vector<Backend*> backends;
    for (int r = 0; r < replicas; ++r) {
      owned.push_back(gpu::make_backend(gpus_[0]));
      backends.push_back(owned.back().get());
    }
    const auto comm = make_gpu_communicator(backends);
    check_all_reduce(*comm, backends, 1001);
  }
}

// Rank 1 never comes: rank 0's collective may block inside NCCL's enqueue (connecting to its peer
// on first use) or in the wait after it; abort() from another thread must release it either way.
TEST_F(CudaBackendTest, NcclAbortReleasesARankWhosePeerNeverComes) {
  if (gpus_.size() < 2) GTEST_SKIP() << "needs 2 GPUs for two NCCL ranks, " << gpus_.size() << " visible";
  std::vector<std::unique_ptr<Backend>> owned;
  std::vector<Backend*> backends;
  for (int r = 0; r < 2; ++r) {
    owned.push_back(gpu::make_backend(gpus_[size_t(r)]));
    backends.push_back(owned.back().get());
  }
  NcclCommunicator comm(backends);
  comm.set_timeout(std::chrono::minutes(5));  // only the abort may end the wait
  backends[0]->bind_current_thread();
  DeviceBuffer data = backends[0]->allocate(1024 * sizeof(float));
  backends[0]->fill(data.as<float>(), 1024, 1.0f);
  std::atomic<bool> returned{false};
  std::string error;
  std::thread rank0([&] {
    backends[0]->bind_current_thread();
    try {
      comm.all_reduce_sum(0, {data.as<float>(), 1024}, "lonely");
    } catch (const CollectiveError& e) {
      error = e.what();
    }
    returned = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  comm.abort("rank 1 failed (test)");
  for (int i = 0; i < 3000 && !returned; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (!returned) {
    // A thread stuck inside NCCL cannot be joined or cancelled: report and end the program.
    std::cerr << "FAIL: rank 0 was still inside its all-reduce 30 s after abort()\n";
    std::_Exit(1);
  }
  rank0.join();
  EXPECT_NE(error.find("lonely #1 on rank 0"), std::string::npos) << error;
  EXPECT_NE(error.find("rank 1 failed (test)"), std::string::npos) << error;
}

// ---- without a GPU too ----

TEST(CudaMemoryPool, SizeClassesWasteAtMostAnEighth) {
  using cuda::DeviceMemoryPool;
  EXPECT_EQ(DeviceMemoryPool::size_class(1), 256u);
  EXPECT_EQ(DeviceMemoryPool::size_class(257), 512u);
  EXPECT_EQ(DeviceMemoryPool::size_class(size_t{1} << 20), size_t{1} << 20);
  size_t previous = 0;
  for (size_t n = 1; n < (size_t{1} << 28); n = n * 5 / 4 + 1) {
    const size_t cls = DeviceMemoryPool::size_class(n);
    EXPECT_GE(cls, n);
    EXPECT_GE(cls, previous);
    if (n > (size_t{1} << 20)) {
      EXPECT_LE(cls - n, n / 8) << n;  // eighths of a power of two above 1 MiB
    } else {
      EXPECT_LT(cls, 2 * n + 256) << n;  // powers of two below
    }
    EXPECT_EQ(cls % 256, 0u) << n;
    previous = cls;
  }
}

TEST(GpuRuntime, RefusesWhatIsNotAGpu) {
  const auto host = make_host_backend(1);
  EXPECT_THROW(cuda::stream_of(*host), InvalidArgument);
  EXPECT_THROW(gpu::make_backend(host->device()), InvalidArgument);
  Backend* ranks[] = {host.get()};
  EXPECT_THROW(NcclCommunicator{ranks}, InvalidArgument);
  EXPECT_FALSE(cuda::tf32_allowed() && std::getenv("MIRROR_ALLOW_TF32") == nullptr);
}

TEST(GpuRuntime, Tf32FollowsTheEnvironmentWhenABackendIsMade) {
  {
    testing::ScopedEnv env("MIRROR_ALLOW_TF32", "1");
    EXPECT_TRUE(cuda::tf32_allowed());
  }
  {
    testing::ScopedEnv env("MIRROR_ALLOW_TF32", "0");
    EXPECT_FALSE(cuda::tf32_allowed());
  }
  testing::ScopedEnv env("MIRROR_ALLOW_TF32", std::nullopt);
  EXPECT_FALSE(cuda::tf32_allowed());
}

TEST(GpuRuntime, VersionReportSaysWhatItFound) {
  EXPECT_TRUE(gpu::built_with_cuda());
  const std::string report = gpu::version_report();
  EXPECT_NE(report.find("CUDA runtime"), std::string::npos) << report;
  EXPECT_NE(report.find("cuDNN"), std::string::npos) << report;
  std::string why;
  if (gpu::list_devices(why).empty()) {
    EXPECT_FALSE(why.empty());
    EXPECT_NE(report.find(why), std::string::npos) << report;
    EXPECT_EQ(report.find("no problems found"), std::string::npos) << report;
  }
  std::cout << report;
}

}  // namespace
}  // namespace mirror
