// The CUDA backend's ResNet ops against the host backend, op by op, with the helpers of
// backend_comparison.hpp (NaN-poisoned outputs, |gpu - host| <= 1e-4 |host| + 1e-5 max|host|):
// padded and strided convolutions, pooling with padding, activations, batch normalization,
// dropout, tensor ops, losses, metrics and running statistics; NaN inputs propagating as on the
// host (nan_cases.hpp). Without a GPU every test skips, saying why.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend_comparison.hpp"
#include "mirror/engine/cuda/cuda_backend.hpp"
#include "mirror/engine/gpu_runtime.hpp"
#include "mirror/engine/host/host_backend.hpp"
#include "nan_cases.hpp"

namespace mirror {
namespace {

using testing::compare_backends;
using testing::Floats;
using testing::kNaN;
using testing::OpCall;
using testing::random_floats;
using testing::same_padded;
using testing::x_count;
using testing::y_count;

std::string describe(const ConvGeometry& g) {
  return "batch " + std::to_string(g.batch) + ", " + std::to_string(g.in_h) + "x" + std::to_string(g.in_w) + "x" +
         std::to_string(g.in_c) + " -> " + std::to_string(g.out_c) + ", kernel " + std::to_string(g.kernel_h) +
         ", stride " + std::to_string(g.stride_h) + ", padding " + std::to_string(g.pad_top) + "," +
         std::to_string(g.pad_left) + "," + std::to_string(g.pad_bottom) + "," + std::to_string(g.pad_right);
}

class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    const auto gpus = gpu::list_devices(why);
    if (gpus.empty()) GTEST_SKIP() << "no GPU: " << why;
    gpu_ = gpu::make_backend(gpus[0]);
    gpu_->bind_current_thread();
    host_ = make_host_backend(1);
  }

  std::vector<Floats> compare(const std::string& what, const OpCall& call, const std::vector<Floats>& initial = {}) {
    return compare_backends(what, call, *gpu_, *host_, initial);
  }
  std::vector<int32_t> random_labels(int64_t rows, int64_t classes) {
    std::vector<int32_t> labels(static_cast<size_t>(rows));
    for (auto& l : labels) l = int32_t(rng_() % uint32_t(classes));
    return labels;
  }

  std::unique_ptr<Backend> gpu_, host_;
  std::mt19937 rng_{20251129};
};

// NaN propagates through every op as on the host: ReLU (the bias-and-activation kernel after a
// convolution), max pooling, the rest by arithmetic.
TEST_F(CudaOpsTest, NanPropagatesThroughEveryOp) { testing::expect_nan_propagates(*gpu_); }

// ---- convolution ----

TEST_F(CudaOpsTest, PaddedAndStridedConvolutions) {
  const std::vector<ConvGeometry> geometries{
      // even size, stride 2: pads 0 top/left, 1 bottom/right
      same_padded(ConvGeometry{2, 8, 8, 3, 4, 3, 3, 2, 2}),
      // odd sizes, 4x4 kernel: pads 1 / 2
      same_padded(ConvGeometry{3, 9, 7, 2, 5, 4, 4, 2, 2}),
      // the ResNet stem, 7x7 stride 2: pads 2 / 3 (2 in cuDNN's descriptor, 1 explicit)
      same_padded(ConvGeometry{2, 16, 16, 3, 8, 7, 7, 2, 2}),
      // batch 1, 3x3x32 -> 64, stride 2 (pads 0 / 1) and stride 1 (symmetric: all in the descriptor)
      same_padded(ConvGeometry{1, 10, 10, 32, 64, 3, 3, 2, 2}),
      same_padded(ConvGeometry{1, 10, 10, 32, 64, 3, 3, 1, 1}),
      // even kernel, stride 1: pads 0 / 1
      same_padded(ConvGeometry{2, 7, 6, 3, 4, 2, 2, 1, 1}),
      // the first geometry's shapes unpadded: a plan of its own
      ConvGeometry{2, 8, 8, 3, 4, 3, 3, 2, 2},
      // a 1x1 shortcut with stride 2
      same_padded(ConvGeometry{2, 9, 9, 4, 6, 1, 1, 2, 2}),
  };
  for (const ConvGeometry& g : geometries) {
    SCOPED_TRACE(describe(g));
    const size_t xs = size_t(x_count(g)), ys = size_t(y_count(g));
    const size_t ws = size_t(g.weight_count()), bs = size_t(g.out_c);
    const Floats x = random_floats(xs, rng_), w = random_floats(ws, rng_), b = random_floats(bs, rng_);
    compare("conv2d_forward", {{x, w, b}, {ys}, {}, [g](Backend& be, auto& in, auto& out, int32_t*) {
                                 be.conv2d_forward(g, in[0], in[1], in[2], out[0]);
                               }});
    compare("conv2d_forward without bias", {{x, w}, {ys}, {}, [g](Backend& be, auto& in, auto& out, int32_t*) {
                                              be.conv2d_forward(g, in[0], in[1], nullptr, out[0]);
                                            }});
    for (bool bias : {true, false}) {
      compare("conv2d_relu_forward", {{x, w, b}, {ys}, {}, [g, bias](Backend& be, auto& in, auto& out, int32_t*) {
                                        be.conv2d_relu_forward(g, in[0], in[1], bias ? in[2] : nullptr, out[0]);
                                      }});
    }
    const Floats dy = random_floats(ys, rng_);
    compare("conv2d_backward_weights", {{x, dy}, {ws, bs}, {}, [g](Backend& be, auto& in, auto& out, int32_t*) {
                                          be.conv2d_backward_weights(g, in[0], in[1], out[0], out[1]);
                                        }});
    compare("conv2d_backward_weights without db", {{x, dy}, {ws}, {}, [g](Backend& be, auto& in, auto& out, int32_t*) {
                                                     be.conv2d_backward_weights(g, in[0], in[1], out[0], nullptr);
                                                   }});
    compare("conv2d_backward_data", {{w, dy}, {xs}, {}, [g](Backend& be, auto& in, auto& out, int32_t*) {
                                       be.conv2d_backward_data(g, in[0], in[1], out[0]);
                                     }});
  }
}

// ---- pooling ----

TEST_F(CudaOpsTest, PoolingWithPaddingAndLeftoverRows) {
  const std::vector<PoolGeometry> geometries{
      same_padded(PoolGeometry{2, 7, 7, 3, 3, 3, 2, 2}),    // pads 1 / 1
      same_padded(PoolGeometry{2, 8, 8, 5, 3, 3, 2, 2}),    // pads 0 / 1
      PoolGeometry{3, 7, 9, 4, 2, 2, 2, 2},                 // valid: a leftover row and column
      same_padded(PoolGeometry{1, 5, 6, 2, 3, 3, 1, 1}),    // overlapping windows, pads 1 / 1
      same_padded(PoolGeometry{2, 7, 7, 33, 2, 2, 2, 2}),   // pads 0 / 1
      same_padded(PoolGeometry{2, 16, 16, 8, 3, 3, 2, 2}),  // ResNet's stem pooling
  };
  for (const PoolGeometry& g : geometries) {
    SCOPED_TRACE(::testing::Message() << g.in_h << "x" << g.in_w << " pool " << g.pool_h << " stride " << g.stride_h
                                      << " pads " << g.pad_top << "," << g.pad_bottom);
    const size_t xs = size_t(x_count(g)), ys = size_t(y_count(g));
    // Negative inputs: a max that let the zero padding win would differ. Five levels: many ties,
    // the first maximum must win.
    for (const auto& [lo, hi] : {std::array<float, 2>{-2.0f, -1.0f}, std::array<float, 2>{-1.0f, 1.0f}}) {
      Floats x = random_floats(xs, rng_, lo, hi);
      for (float& v : x) v = std::round(v * 2.0f) / 2.0f;
      const OpCall max_fwd{{x}, {ys}, {}, [g](Backend& b, auto& in, auto& out, int32_t*) {
                             b.max_pool_forward(g, in[0], out[0]);
                           }};
      const Floats y = compare("max_pool_forward", max_fwd)[0];
      const Floats dy = random_floats(ys, rng_);
      compare("max_pool_backward", {{x, y, dy}, {xs}, {}, [g](Backend& b, auto& in, auto& out, int32_t*) {
                                      b.max_pool_backward(g, in[0], in[1], in[2], out[0]);
                                    }});
      Floats relu_x = x;
      for (float& v : relu_x) v = std::max(v, 0.0f);
      const Floats relu_y = OpCall{{relu_x}, {ys}, {}, max_fwd.op}.run(*host_)[0];
      compare("max_pool_relu_backward", {{relu_x, relu_y, dy}, {xs}, {}, [g](Backend& b, auto& in, auto& out, int32_t*) {
                                           b.max_pool_relu_backward(g, in[0], in[1], in[2], out[0]);
                                         }});
      compare("avg_pool_forward", {{x}, {ys}, {}, [g](Backend& b, auto& in, auto& out, int32_t*) {
                                     b.avg_pool_forward(g, in[0], out[0]);
                                   }});
      compare("avg_pool_backward", {{dy}, {xs}, {}, [g](Backend& b, auto& in, auto& out, int32_t*) {
                                      b.avg_pool_backward(g, in[0], out[0]);
                                    }});
    }
  }
}

TEST_F(CudaOpsTest, GlobalAveragePooling) {
  for (auto [batch, pixels, channels] : {std::array<int64_t, 3>{3, 49, 64}, {1, 1, 5}, {2, 16, 300}}) {
    const size_t xs = size_t(batch * pixels * channels), ys = size_t(batch * channels);
    compare("global_avg_pool_forward",
            {{random_floats(xs, rng_)}, {ys}, {}, [=](Backend& b, auto& in, auto& out, int32_t*) {
               b.global_avg_pool_forward(batch, pixels, channels, in[0], out[0]);
             }});
    compare("global_avg_pool_backward",
            {{random_floats(ys, rng_)}, {xs}, {}, [=](Backend& b, auto& in, auto& out, int32_t*) {
               b.global_avg_pool_backward(batch, pixels, channels, in[0], out[0]);
             }});
  }
}

// ---- activations ----

TEST_F(CudaOpsTest, EveryActivationInAndOutOfPlace) {
  const int64_t rows = 37, cols = 10;
  const size_t n = size_t(rows * cols);
  for (Activation act : {Activation::Linear, Activation::ReLU, Activation::Softmax, Activation::Sigmoid,
                         Activation::Tanh, Activation::GELU, Activation::SiLU}) {
    SCOPED_TRACE(to_string(act));
    const Floats x = random_floats(n, rng_, -5.0f, 5.0f);
    const Floats y = compare("activation_forward", {{x}, {n}, {}, [=](Backend& b, auto& in, auto& out, int32_t*) {
                                                      b.activation_forward(act, rows, cols, in[0], out[0]);
                                                    }})[0];
    compare("activation_forward in place", {{}, {n}, {}, [=](Backend& b, auto&, auto& out, int32_t*) {
                                              b.activation_forward(act, rows, cols, out[0], out[0]);
                                            }},
            {x});
    // Only what the contract says the gradient reads; the other pointer is null.
    const bool needs_x = backward_needs_input(act);
    const Floats dy = random_floats(n, rng_);
    compare("activation_backward", {{x, y, dy}, {n}, {}, [=](Backend& b, auto& in, auto& out, int32_t*) {
                                      b.activation_backward(act, rows, cols, needs_x ? in[0] : nullptr,
                                                            needs_x ? nullptr : in[1], in[2], out[0]);
                                    }});
    compare("activation_backward in place", {{x, y}, {n}, {}, [=](Backend& b, auto& in, auto& out, int32_t*) {
                                               b.activation_backward(act, rows, cols, needs_x ? in[0] : nullptr,
                                                                     needs_x ? nullptr : in[1], out[0], out[0]);
                                             }},
            {dy});
  }
}

// ---- batch normalization ----

TEST_F(CudaOpsTest, BatchNormSumsAreDeterministicAndMatchTheHost) {
  // 5000 rows span several 512-row chunks; 40 channels leave a partial tile of 32.
  for (auto [rows, channels] : {std::array<int64_t, 2>{338, 3}, {5000, 40}, {1, 64}, {1025, 33}}) {
    SCOPED_TRACE(::testing::Message() << rows << " rows, " << channels << " channels");
    const size_t n = size_t(rows * channels), c = size_t(channels);
    const Floats x = random_floats(n, rng_, 2.0f, 4.0f), shift = random_floats(c, rng_, 2.5f, 3.5f);
    const OpCall sums{{x, shift}, {2 * c}, {}, [=](Backend& b, auto& in, auto& out, int32_t*) {
                        b.batch_norm_sums(rows, channels, in[0], in[1], out[0]);
                      }};
    const Floats first = compare("batch_norm_sums", sums)[0];
    const Floats again = sums.run(*gpu_)[0];
    EXPECT_EQ(0, std::memcmp(first.data(), again.data(), first.size() * sizeof(float))) << "same inputs, other bits";

    const Floats dy = random_floats(n, rng_), mean = random_floats(c, rng_, 2.5f, 3.5f);
    const Floats invstd = random_floats(c, rng_, 0.5f, 2.0f);
    compare("batch_norm_backward_sums",
            {{x, dy, mean, invstd}, {2 * c}, {}, [=](Backend& b, auto& in, auto& out, int32_t*) {
               b.batch_norm_backward_sums(rows, channels, in[0], in[1], in[2], in[3], out[0]);
             }});
  }
}

// A replica's empty share still takes part in synchronized batch normalization's all-reduce.
TEST_F(CudaOpsTest, BatchNormSumsOfNoRowsAreZero) {
  const OpCall call{{Floats(3, 1.0f)}, {6, 6}, {}, [](Backend& b, auto& in, auto& out, int32_t*) {
                      b.batch_norm_sums(0, 3, nullptr, in[0], out[0]);
                      b.batch_norm_backward_sums(0, 3, nullptr, nullptr, in[0], in[0], out[1]);
                    }};
  const auto sums = call.run(*gpu_);
  EXPECT_EQ(sums[0], Floats(6, 0.0f));
  EXPECT_EQ(sums[1], Floats(6, 0.0f));
}

TEST_F(CudaOpsTest, BatchNormMomentsForwardBackwardAndMovingUpdate) {
  const int64_t rows = 2 * 7 * 7, channels = 24;
  const size_t n = size_t(rows * channels), c = size_t(channels);
  const double count = 3.0 * rows;  // as if all-reduced over three replicas
  const Floats shift = random_floats(c, rng_), s1 = random_floats(c, rng_, -20.0f, 20.0f);
  Floats sums = s1;
  for (size_t i = 0; i < c; ++i) sums.push_back(s1[i] * s1[i] / float(count) + float(count) * (0.5f + float(i) / 8));
  sums[2 * c - 1] = s1[c - 1] * s1[c - 1] / float(count) * 0.999f;  // cancels to below zero: variance clamped at 0
  const OpCall moments_call{{shift, sums}, {c, c, c}, {}, [=](Backend& b, auto& in, auto& out, int32_t*) {
                              b.batch_norm_moments(channels, count, 1e-3f, in[0], in[1], out[0], out[1], out[2]);
                            }};
  const auto moments = compare("batch_norm_moments", moments_call);
  const Floats &mean = moments[0], &var = moments[1], &invstd = moments[2];
  compare("batch_norm_invstd", {{var}, {c}, {}, [=](Backend& b, auto& in, auto& out, int32_t*) {
                                  b.batch_norm_invstd(channels, 1e-3f, in[0], out[0]);
                                }});
  const Floats x = random_floats(n, rng_, -2.0f, 2.0f), gamma = random_floats(c, rng_), beta = random_floats(c, rng_);
  const Floats dy = random_floats(n, rng_), grad_sums = random_floats(2 * c, rng_, -5.0f, 5.0f);
  for (bool affine : {true, false}) {
    SCOPED_TRACE(affine ? "gamma and beta" : "no gamma, no beta");
    compare("batch_norm_forward",
            {{x, mean, invstd, gamma, beta}, {n}, {}, [=](Backend& b, auto& in, auto& out, int32_t*) {
               b.batch_norm_forward(rows, channels, in[0], in[1], in[2], affine ? in[3] : nullptr,
                                    affine ? in[4] : nullptr, out[0]);
             }});
    compare("batch_norm_backward_data",
            {{x, dy, mean, invstd, gamma, grad_sums}, {n}, {}, [=](Backend& b, auto& in, auto& out, int32_t*) {
               b.batch_norm_backward_data(rows, channels, in[0], in[1], in[2], in[3], affine ? in[4] : nullptr, in[5],
                                          count, out[0]);
             }});
  }
  const Floats moving_mean = random_floats(c, rng_), moving_var = random_floats(c, rng_, 0.5f, 1.5f);
  for (float guard : {1.25f, kNaN}) {
    const auto moved = compare("batch_norm_update_moving",
                               {{mean, var, Floats{guard}}, {c, c}, {}, [=](Backend& b, auto& in, auto& out, int32_t*) {
                                  b.batch_norm_update_moving(channels, 0.99f, in[0], in[1], in[2], out[0], out[1]);
                                }},
                               {moving_mean, moving_var});
    if (std::isnan(guard)) {
      EXPECT_EQ(moved[0], moving_mean) << "a non-finite guard must leave the statistics alone";
    }
  }
}

// ---- dropout and tensors ----

TEST_F(CudaOpsTest, DropoutMasksEqualTheHostsBitForBit) {
  const int64_t rows = 33, cols = 130;
  const size_t n = size_t(rows * cols);
  const Floats x = random_floats(n, rng_, 0.5f, 1.5f);  // never zero: a zero output means dropped
  for (const DropoutSpec spec : {DropoutSpec{0.5f, 7, 3, 0}, DropoutSpec{0.3f, 7, 3, 96}, DropoutSpec{0.9f, 11, 0, 5}}) {
    SCOPED_TRACE(::testing::Message() << "rate " << spec.rate << ", first row " << spec.first_row);
    const OpCall fwd{{x}, {n}, {}, [=](Backend& b, auto& in, auto& out, int32_t*) {
                       b.dropout_forward(spec, rows, cols, in[0], out[0]);
                     }};
    const Floats gpu = compare("dropout_forward", fwd)[0], host = fwd.run(*host_)[0];
    size_t kept = 0, differ = 0;
    for (size_t i = 0; i < n; ++i) {
      kept += gpu[i] != 0.0f;
      differ += (gpu[i] == 0.0f) != (host[i] == 0.0f);
    }
    EXPECT_EQ(differ, 0u) << "mask elements differ";
    EXPECT_NEAR(double(kept) / double(n), 1.0 - spec.rate, 0.05);
    const Floats back = compare("dropout_backward in place", {{}, {n}, {}, [=](Backend& b, auto&, auto& out, int32_t*) {
                                                               b.dropout_backward(spec, rows, cols, out[0], out[0]);
                                                             }},
                                {x})[0];
    EXPECT_EQ(back, gpu) << "backward must draw the forward's mask again";
  }
}

TEST_F(CudaOpsTest, AddAndCopyColumns) {
  const size_t n = 1001;
  const Floats a = random_floats(n, rng_), b = random_floats(n, rng_);
  compare("add", {{a, b}, {n}, {}, [=](Backend& be, auto& in, auto& out, int32_t*) { be.add(n, in[0], in[1], out[0]); }});
  compare("add in place",
          {{b}, {n}, {}, [=](Backend& be, auto& in, auto& out, int32_t*) { be.add(n, out[0], in[0], out[0]); }}, {a});
  // Concatenation: columns 0..4 of 13-wide rows into columns 3..7 of 20-wide rows; accumulating, as
  // its gradient does where a tensor feeds several branches.
  const int64_t rows = 17, cols = 5, src_stride = 13, dst_stride = 20;
  const Floats src = random_floats(size_t(rows * src_stride), rng_), dst = random_floats(size_t(rows * dst_stride), rng_);
  for (bool accumulate : {false, true}) {
    compare(accumulate ? "copy_columns accumulating" : "copy_columns",
            {{src}, {dst.size()}, {}, [=](Backend& be, auto& in, auto& out, int32_t*) {
               be.copy_columns(rows, cols, in[0], src_stride, out[0] + 3, dst_stride, accumulate);
             }},
            {dst});
  }
}

// ---- loss, metrics, statistics ----

TEST_F(CudaOpsTest, EveryLossKindAndOption) {
  for (int64_t rows : {1, 37, 600}) {
    for (LossKind kind : {LossKind::SparseCategoricalCrossentropy, LossKind::CategoricalCrossentropy,
                          LossKind::BinaryCrossentropy, LossKind::MeanSquaredError}) {
      const bool per_column = kind == LossKind::BinaryCrossentropy || kind == LossKind::MeanSquaredError;
      for (int64_t cols : per_column ? std::vector<int64_t>{1, 4} : std::vector<int64_t>{10}) {
        for (int options = 0; options < 6; ++options) {
          LossSpec spec{kind, options % 2 == 1, options >= 2 && options < 4 ? 0.1f : 0.0f, options >= 4};
          if (spec.gradient_through_activation && (spec.from_logits || kind == LossKind::MeanSquaredError)) continue;
          SCOPED_TRACE(::testing::Message() << "kind " << int(kind) << ", " << rows << "x" << cols << ", logits "
                                            << spec.from_logits << ", smoothing " << spec.label_smoothing
                                            << ", through activation " << spec.gradient_through_activation);
          const size_t n = size_t(rows * cols);
          Floats y = random_floats(n, rng_, -3.0f, 3.0f);
          if (!spec.from_logits && kind != LossKind::MeanSquaredError) {  // probabilities
            const Activation act = cols > 1 && !per_column ? Activation::Softmax : Activation::Sigmoid;
            host_->activation_forward(act, rows, cols, y.data(), y.data());
            y[0] = 0.0f;  // clipped: no gradient through the probability path
          }
          const auto labels = random_labels(rows, cols == 1 ? 2 : cols);
          compare("loss", {{y}, {n, 1}, labels, [=](Backend& b, auto& in, auto& out, int32_t* l) {
                             b.loss(spec, rows, cols, in[0], l, 0.25f, out[0], out[1]);
                           }},
                  {Floats(n, kNaN), Floats{1.5f}});
          compare("loss without gradient", {{y}, {1}, labels, [=](Backend& b, auto& in, auto& out, int32_t* l) {
                                              b.loss(spec, rows, cols, in[0], l, 1.0f, nullptr, out[0]);
                                            }},
                  {Floats{0.0f}});
        }
      }
    }
  }
}

TEST_F(CudaOpsTest, BadLabelsMakeTheGpuLossNaN) {
  const int64_t rows = 5, cols = 4;
  std::vector<int32_t> labels{0, 1, 4, 2, -1};  // 4 and -1 are outside [0, 4)
  const OpCall call{{random_floats(size_t(rows * cols), rng_, 0.1f, 0.9f)}, {size_t(rows * cols), 1}, labels,
                    [=](Backend& b, auto& in, auto& out, int32_t* l) {
                      b.loss({}, rows, cols, in[0], l, 1.0f, out[0], out[1]);
                    }};
  const auto out = call.run(*gpu_, {Floats(size_t(rows * cols), kNaN), Floats{0.0f}});
  EXPECT_TRUE(std::isnan(out[1][0]));
  for (int64_t j = 0; j < cols; ++j) EXPECT_EQ(out[0][size_t(2 * cols + j)], 0.0f) << "the bad row's gradient";
}

TEST_F(CudaOpsTest, EveryMetric) {
  const int64_t rows = 301;
  const std::vector<MetricSpec> specs{
      {MetricKind::SparseCategoricalAccuracy}, {MetricKind::CategoricalAccuracy},
      {MetricKind::BinaryAccuracy, 5, 0.5f},   {MetricKind::BinaryAccuracy, 5, 0.3f},
      {MetricKind::SparseTopKCategoricalAccuracy, 1}, {MetricKind::SparseTopKCategoricalAccuracy, 3}};
  for (const MetricSpec& spec : specs) {
    for (int64_t cols : spec.kind == MetricKind::BinaryAccuracy ? std::vector<int64_t>{1, 3} : std::vector<int64_t>{10}) {
      SCOPED_TRACE(::testing::Message() << "metric " << int(spec.kind) << ", k " << spec.k << ", threshold "
                                        << spec.threshold << ", " << cols << " columns");
      Floats y = random_floats(size_t(rows * cols), rng_, 0.0f, 1.0f);
      for (float& v : y) v = std::round(v * 4.0f) / 4.0f;  // ties: the first maximum is the prediction
      const OpCall call{{y}, {1}, random_labels(rows, cols == 1 ? 2 : cols),
                        [=](Backend& b, auto& in, auto& out, int32_t* l) { b.metric(spec, rows, cols, in[0], l, out[0]); }};
      compare("metric", call, {Floats{2.0f}});
    }
  }
}

TEST_F(CudaOpsTest, AccumulateStatsOfWidthFour) {
  const size_t width = 4;
  const std::vector<Floats> steps{{0.5f, 3, 4, 5}, {0.25f, 1, 2, 3}, {kNaN, 9, 9, 9}, {0.125f, 1, 1, 1}};
  const OpCall call{steps, {width + 1}, {}, [=](Backend& b, auto& in, auto& out, int32_t*) {
                      for (size_t s = 0; s < in.size(); ++s) b.accumulate_stats(width, in[s], out[0], int64_t(s));
                    }};
  const Floats totals = compare("accumulate_stats", call, {Floats{0, 0, 0, 0, -1}})[0];
  EXPECT_TRUE(std::isnan(totals[0]));
  EXPECT_EQ(totals[1], 4.0f);
  EXPECT_EQ(totals[3], 8.0f);
  EXPECT_EQ(totals[4], 2.0f) << "the first step with a non-finite loss";
}

// ---- steady state ----

// The scratch of explicit padding and of batch normalization's partial sums grows on the first
// step, then is reused: later steps allocate nothing.
TEST_F(CudaOpsTest, PaddingAndBatchNormScratchStopAllocating) {
  const ConvGeometry g = same_padded(ConvGeometry{4, 16, 16, 8, 16, 3, 3, 2, 2});
  ASSERT_FALSE(g.symmetric());
  const int64_t rows = g.batch * g.out_h() * g.out_w();
  std::vector<DeviceBuffer> buffers;
  const auto buffer = [&](int64_t count, float value) {
    buffers.push_back(gpu_->allocate(size_t(count) * sizeof(float)));
    gpu_->fill(buffers.back().as<float>(), size_t(count), value);
    return buffers.back().as<float>();
  };
  float *x = buffer(x_count(g), 0.5f), *w = buffer(g.weight_count(), 0.1f), *y = buffer(y_count(g), 0.0f);
  float *dx = buffer(x_count(g), 0.0f), *dw = buffer(g.weight_count(), 0.0f);
  float *sums = buffer(2 * g.out_c, 0.0f), *shift = buffer(g.out_c, 0.0f);
  const auto step = [&] {
    gpu_->conv2d_forward(g, x, w, nullptr, y);
    gpu_->batch_norm_sums(rows, g.out_c, y, shift, sums);
    gpu_->conv2d_backward_weights(g, x, y, dw, nullptr);
    gpu_->conv2d_backward_data(g, w, y, dx);
    gpu_->synchronize();
  };
  step();
  step();
  const int device = gpu_->device().index;
  const size_t after_warmup = cuda::memory_stats(device).device_allocations;
  for (int i = 0; i < 3; ++i) step();
  EXPECT_EQ(cuda::memory_stats(device).device_allocations, after_warmup);
}

}  // namespace
}  // namespace mirror
