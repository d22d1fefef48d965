// Ops given NaN inputs, and where their outputs must be NaN: every activation, the convolutions
// (alone, with ReLU, fused with max pooling), max, average and global average pooling, dense and
// batch normalization. As in Keras on every backend (relu(NaN), max(NaN, x), NaN * w are NaN), so
// a diverged layer reaches the loss and the NaN policy fires. Shared by the host's tests
// (test_nan.cpp) and the GPU's (test_cuda_ops.cpp), which run each case on their backend.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backend_comparison.hpp"
#include "mirror/engine/backend.hpp"
#include "op_test_util.hpp"

namespace mirror::testing {

struct NanCase {
  std::string name;
  OpCall call;
  // Per output: which elements must be NaN; every other element must be finite.
  std::vector<std::vector<bool>> nan_at;
  // Runs only where the backend has the op (the fused convolution and pooling).
  std::function<bool(const Backend&)> applies = [](const Backend&) { return true; };
};

// Elements of an (n, h, w, c) tensor that a pooling window of g covering a NaN input reaches.
inline std::vector<bool> pooled_nans(const PoolGeometry& g, const Floats& x) {
  std::vector<bool> nan(size_t(g.batch * g.out_h() * g.out_w() * g.channels));
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t oh = 0; oh < g.out_h(); ++oh)
      for (int64_t ow = 0; ow < g.out_w(); ++ow)
        for (int64_t c = 0; c < g.channels; ++c) {
          bool any = false;
          for (int64_t i = 0; i < g.pool_h; ++i)
            for (int64_t j = 0; j < g.pool_w; ++j) {
              const int64_t h = oh * g.stride_h - g.pad_top + i, w = ow * g.stride_w - g.pad_left + j;
              if (h < 0 || w < 0 || h >= g.in_h || w >= g.in_w) continue;
              any = any || std::isnan(x[size_t(((n * g.in_h + h) * g.in_w + w) * g.channels + c)]);
            }
          nan[size_t(((n * g.out_h() + oh) * g.out_w() + ow) * g.channels + c)] = any;
        }
  return nan;
}

// Every element of channel `channel` in an (..., channels) tensor of `count` elements.
inline std::vector<bool> channel_nans(size_t count, int64_t channels, int64_t channel) {
  std::vector<bool> nan(count);
  for (size_t i = 0; i < count; ++i) nan[i] = int64_t(i % size_t(channels)) == channel;
  return nan;
}

inline std::vector<NanCase> nan_cases() {
  std::mt19937 rng(20261208);
  std::vector<NanCase> cases;
  // Activations: NaN at some elements; softmax makes its whole row NaN.
  const int64_t rows = 6, cols = 7;
  Floats x = random_floats(size_t(rows * cols), rng, -3.0f, 3.0f);
  x[3] = x[17] = x[40] = kNaN;
  for (Activation a : {Activation::Linear, Activation::ReLU, Activation::Sigmoid, Activation::Tanh,
                       Activation::Softmax, Activation::GELU, Activation::SiLU}) {
    std::vector<bool> nan(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const size_t row = i / size_t(cols);
      bool row_nan = false;
      for (size_t j = row * cols; j < (row + 1) * cols; ++j) row_nan = row_nan || std::isnan(x[j]);
      nan[i] = a == Activation::Softmax ? row_nan : std::isnan(x[i]);
    }
    cases.push_back({"activation " + std::string(to_string(a)),
                     {{x}, {x.size()}, {}, [=](Backend& b, const auto& in, const auto& out, int32_t*) {
                        b.activation_forward(a, rows, cols, in[0], out[0]);
                      }},
                     {nan}});
  }
  // Convolutions with one filter's kernel NaN: that channel is NaN everywhere, with or without
  // ReLU; the others stay finite.
  const ConvGeometry conv{2, 8, 8, 3, 8, 3, 3};
  const size_t conv_out = size_t(conv.batch * conv.out_h() * conv.out_w() * conv.out_c);
  const Floats cx = random_floats(size_t(conv.batch * conv.in_h * conv.in_w * conv.in_c), rng);
  Floats cw = random_floats(size_t(conv.weight_count()), rng);
  const Floats cb = random_floats(size_t(conv.out_c), rng);
  const int64_t nan_filter = 5;
  cw[size_t((1 * conv.kernel_w + 2) * conv.in_c * conv.out_c + 1 * conv.out_c + nan_filter)] = kNaN;
  for (bool relu : {false, true}) {
    cases.push_back({relu ? "conv2d with ReLU" : "conv2d",
                     {{cx, cw, cb}, {conv_out}, {}, [=](Backend& b, const auto& in, const auto& out, int32_t*) {
                        if (relu)
                          b.conv2d_relu_forward(conv, in[0], in[1], in[2], out[0]);
                        else
                          b.conv2d_forward(conv, in[0], in[1], in[2], out[0]);
                      }},
                     {channel_nans(conv_out, conv.out_c, nan_filter)}});
    // The same convolution fused with 2x2 max pooling.
    const PoolGeometry pool{conv.batch, conv.out_h(), conv.out_w(), conv.out_c, 2, 2, 2, 2};
    const size_t pooled = size_t(pool.batch * pool.out_h() * pool.out_w() * pool.channels);
    cases.push_back({relu ? "conv2d with ReLU fused with max pooling" : "conv2d fused with max pooling",
                     {{cx, cw, cb}, {pooled, pooled}, {}, [=](Backend& b, const auto& in, const auto& out, int32_t*) {
                        // The argmax bytes go to the second output's memory.
                        b.conv2d_max_pool_forward(conv, pool, relu, in[0], in[1], in[2], out[0],
                                                  reinterpret_cast<uint8_t*>(out[1]));
                        b.fill(out[1], pooled, 0.0f);
                      }},
                     {channel_nans(pooled, pool.channels, nan_filter), std::vector<bool>(pooled)},
                     [=](const Backend& b) { return b.fuses_conv2d_max_pool(conv, pool); }});
  }
  // Pooling with NaN inputs: every window that holds one gives NaN.
  const PoolGeometry tiles{2, 6, 8, 5, 2, 2, 2, 2};
  const PoolGeometry overlapping{2, 7, 7, 3, 3, 3, 2, 2, 1, 1, 1, 1};
  for (const PoolGeometry& g : {tiles, overlapping}) {
    Floats px = random_floats(size_t(g.batch * g.in_h * g.in_w * g.channels), rng);
    for (size_t i = 7; i < px.size(); i += 41) px[i] = kNaN;
    const size_t out = size_t(g.batch * g.out_h() * g.out_w() * g.channels);
    const std::string shape = std::to_string(g.pool_h) + "x" + std::to_string(g.pool_w);
    cases.push_back({"max pooling " + shape,
                     {{px}, {out}, {}, [=](Backend& b, const auto& in, const auto& o, int32_t*) {
                        b.max_pool_forward(g, in[0], o[0]);
                      }},
                     {pooled_nans(g, px)}});
    cases.push_back({"average pooling " + shape,
                     {{px}, {out}, {}, [=](Backend& b, const auto& in, const auto& o, int32_t*) {
                        b.avg_pool_forward(g, in[0], o[0]);
                      }},
                     {pooled_nans(g, px)}});
    PoolGeometry global = g;
    global.pool_h = global.stride_h = g.in_h, global.pool_w = global.stride_w = g.in_w;
    global.pad_top = global.pad_left = global.pad_bottom = global.pad_right = 0;
    cases.push_back({"global average pooling " + shape,
                     {{px}, {size_t(g.batch * g.channels)}, {}, [=](Backend& b, const auto& in, const auto& o, int32_t*) {
                        b.global_avg_pool_forward(g.batch, g.in_h * g.in_w, g.channels, in[0], o[0]);
                      }},
                     {pooled_nans(global, px)}});
  }
  // Dense: a NaN input makes its row NaN.
  const int64_t in = 9, units = 4;
  Floats dx = random_floats(size_t(rows * in), rng);
  dx[size_t(2 * in + 3)] = kNaN;
  const Floats dw = random_floats(size_t(in * units), rng), db = random_floats(size_t(units), rng);
  std::vector<bool> dense_nan(size_t(rows * units));
  for (int64_t j = 0; j < units; ++j) dense_nan[size_t(2 * units + j)] = true;
  cases.push_back({"dense",
                   {{dx, dw, db}, {size_t(rows * units)}, {}, [=](Backend& b, const auto& i, const auto& o, int32_t*) {
                      b.dense_forward(rows, in, units, i[0], i[1], i[2], o[0]);
                    }},
                   {dense_nan}});
  // Batch normalization with given moments: NaN where the input is.
  const Floats mean = random_floats(size_t(cols), rng), invstd = random_floats(size_t(cols), rng, 0.5f, 2.0f);
  const Floats gamma = random_floats(size_t(cols), rng), beta = random_floats(size_t(cols), rng);
  std::vector<bool> bn_nan(x.size());
  for (size_t i = 0; i < x.size(); ++i) bn_nan[i] = std::isnan(x[i]);
  cases.push_back({"batch normalization",
                   {{x, mean, invstd, gamma, beta}, {x.size()}, {}, [=](Backend& b, const auto& i, const auto& o, int32_t*) {
                      b.batch_norm_forward(rows, cols, i[0], i[1], i[2], i[3], i[4], o[0]);
                    }},
                   {bn_nan}});
  return cases;
}

// Runs every case that applies on `backend` and checks where its outputs are NaN.
inline void expect_nan_propagates(Backend& backend) {
  for (const NanCase& c : nan_cases()) {
    if (!c.applies(backend)) continue;
    SCOPED_TRACE(c.name);
    const std::vector<Floats> outputs = c.call.run(backend);
    for (size_t k = 0; k < c.nan_at.size(); ++k) {
      int shown = 0;
      for (size_t i = 0; i < outputs[k].size(); ++i) {
        const bool is_nan = std::isnan(outputs[k][i]);
        if (is_nan == c.nan_at[k][i]) continue;
        if (shown++ < 3)
          ADD_FAILURE() << "output " << k << " element " << i << " is " << outputs[k][i] << ", expected "
                        << (c.nan_at[k][i] ? "NaN" : "a finite value");
      }
    }
  }
}

}  // namespace mirror::testing
