// The host's convolution fused with the 2x2 max pooling after it, against naive double-precision
// references of the two ops one after the other (convolution, optional ReLU, max pooling; and
// back): the pooled output, and the kernel's, bias's and input's gradients from the pooled
// gradient and the saved argmax. Shapes cover the reference model's 3x3 kernel on one channel,
// several input channels, kernels other than 3x3, "same" padding, odd convolution outputs (a row
// and a column no window covers), one image and more images than threads. Outputs are poisoned
// with NaN first, so an element the op forgot to write fails.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "mirror/engine/error.hpp"
#include "mirror/engine/host/host_backend.hpp"
#include "op_test_util.hpp"

namespace mirror {
namespace {

using namespace mirror::testing;

class HostConvPool : public HostBackendTest {
 protected:
  HostConvPool() : HostBackendTest(20261129) {}
};

PoolGeometry pool_after(const ConvGeometry& g) { return {g.batch, g.out_h(), g.out_w(), g.out_c, 2, 2, 2, 2}; }

std::vector<ConvGeometry> fused_shapes() {
  // batch, in_h, in_w, in_c, out_c, kernel_h, kernel_w, stride_h, stride_w
  return {
      {5, 28, 28, 1, 32, 3, 3, 1, 1},               // the reference model's first layer
      {1, 9, 8, 3, 8, 3, 3, 1, 1},                  // odd convolution output height (7): a row left over
      {3, 10, 11, 4, 16, 3, 3, 1, 1},               // 3x3 on several channels; odd width (9)
      {2, 9, 9, 2, 8, 2, 3, 1, 1},                  // another kernel size
      same_padded(ConvGeometry{3, 7, 6, 3, 8, 3, 3, 1, 1}),
      same_padded(ConvGeometry{2, 8, 8, 1, 24, 5, 5, 1, 1}),
  };
}

::testing::Message describe(const ConvGeometry& g, bool relu, bool bias) {
  return ::testing::Message() << "conv " << g.batch << "x" << g.in_h << "x" << g.in_w << "x" << g.in_c << " -> "
                              << g.out_c << ", kernel " << g.kernel_h << "x" << g.kernel_w << ", pad t/l/b/r "
                              << g.pad_top << "/" << g.pad_left << "/" << g.pad_bottom << "/" << g.pad_right
                              << (relu ? ", relu" : ", linear") << (bias ? ", bias" : ", no bias");
}

TEST_F(HostConvPool, MatchesConvolutionThenPooling) {
  for (const ConvGeometry& g : fused_shapes()) {
    const PoolGeometry p = pool_after(g);
    ASSERT_TRUE(backend_->fuses_conv2d_max_pool(g, p));
    const Floats x = random_floats(x_count(g), rng_), w = random_floats(g.weight_count(), rng_);
    const Floats b = random_floats(g.out_c, rng_), dy = random_floats(y_count(p), rng_);
    for (const bool relu : {true, false}) {
      for (const bool bias : {true, false}) {
        SCOPED_TRACE(describe(g, relu, bias));
        // Forward: the convolution, ReLU, pooling; backward: unpool to the first maximum, ReLU's
        // derivative, the convolution's gradients.
        Doubles conv = conv_reference(g, to_doubles(x), to_doubles(w), bias ? to_doubles(b) : Doubles{});
        if (relu)
          for (double& v : conv) v = std::max(v, 0.0);
        Doubles dconv;
        const Doubles y_ref = max_pool_reference(p, conv, to_doubles(dy), &dconv);
        if (relu)
          for (size_t i = 0; i < dconv.size(); ++i) dconv[i] = conv[i] > 0 ? dconv[i] : 0.0;
        Doubles dw_ref(g.weight_count(), 0.0), db_ref(g.out_c, 0.0), dx_ref(x_count(g), 0.0);
        for (size_t i = 0; i < dconv.size(); ++i) db_ref[i % static_cast<size_t>(g.out_c)] += dconv[i];
        for_each_tap(g, [&](int64_t xi, int64_t wi, int64_t yi) {
          dw_ref[wi] += double{x[xi]} * dconv[yi];
          dx_ref[xi] += double{w[wi]} * dconv[yi];
        });

        Floats y(y_count(p), kNaN), dw(g.weight_count(), kNaN), db(g.out_c, kNaN), dx(x_count(g), kNaN);
        std::vector<uint8_t> argmax(static_cast<size_t>(y_count(p)), 77);
        backend_->conv2d_max_pool_forward(g, p, relu, x.data(), w.data(), bias ? b.data() : nullptr, y.data(),
                                          argmax.data());
        backend_->conv2d_max_pool_backward(g, p, x.data(), w.data(), dy.data(), argmax.data(), dw.data(),
                                           bias ? db.data() : nullptr, dx.data());
        const double taps = static_cast<double>(g.kernel_h * g.kernel_w * g.in_c);
        const double positions = static_cast<double>(g.batch * g.out_h() * g.out_w());
        expect_close("fused y", y, y_ref, 1e-5 * std::sqrt(taps), 1e-5);
        expect_close("fused dw", dw, dw_ref, 1e-5 * std::sqrt(positions * taps), 1e-5);
        if (bias) expect_close("fused db", db, db_ref, 1e-5 * std::sqrt(positions), 1e-5);
        expect_close("fused dx", dx, dx_ref, 1e-5 * std::sqrt(taps), 1e-5);
        for (const uint8_t code : argmax)
          ASSERT_TRUE(code < 4 || (relu && code == Backend::kArgmaxNone)) << "argmax byte " << int{code};
        // Without an input gradient (the first layer): the same weight gradients.
        Floats dw_again(g.weight_count(), kNaN);
        backend_->conv2d_max_pool_backward(g, p, x.data(), w.data(), dy.data(), argmax.data(), dw_again.data(),
                                           nullptr, nullptr);
        expect_close("fused dw without dx", dw_again, to_doubles(dw), 0.0, 0.0);
      }
    }
  }
}

// The weight gradient is summed per thread, then across threads in order: the same bits every time.
TEST_F(HostConvPool, WeightGradientIsDeterministic) {
  const ConvGeometry g{7, 12, 12, 1, 16, 3, 3, 1, 1};
  const PoolGeometry p = pool_after(g);
  const Floats x = random_floats(x_count(g), rng_), w = random_floats(g.weight_count(), rng_);
  const Floats dy = random_floats(y_count(p), rng_);
  Floats y(y_count(p));
  std::vector<uint8_t> argmax(y.size());
  backend_->conv2d_max_pool_forward(g, p, true, x.data(), w.data(), nullptr, y.data(), argmax.data());
  Floats first(g.weight_count()), again(g.weight_count());
  backend_->conv2d_max_pool_backward(g, p, x.data(), w.data(), dy.data(), argmax.data(), first.data(), nullptr, nullptr);
  for (int run = 0; run < 3; ++run) {
    backend_->conv2d_max_pool_backward(g, p, x.data(), w.data(), dy.data(), argmax.data(), again.data(), nullptr,
                                       nullptr);
    ASSERT_EQ(0, std::memcmp(first.data(), again.data(), first.size() * sizeof(float))) << "run " << run;
  }
}

TEST_F(HostConvPool, SaysWhichGeometriesItFuses) {
  const ConvGeometry g{2, 28, 28, 1, 32, 3, 3, 1, 1};
  const PoolGeometry p = pool_after(g);
  EXPECT_TRUE(backend_->fuses_conv2d_max_pool(g, p));
  ConvGeometry strided = g;
  strided.stride_h = strided.stride_w = 2;
  EXPECT_FALSE(backend_->fuses_conv2d_max_pool(strided, pool_after(strided)));
  ConvGeometry odd_filters = g;
  odd_filters.out_c = 10;
  EXPECT_FALSE(backend_->fuses_conv2d_max_pool(odd_filters, pool_after(odd_filters)));
  PoolGeometry overlapping = p;
  overlapping.pool_h = overlapping.pool_w = 3;
  EXPECT_FALSE(backend_->fuses_conv2d_max_pool(g, overlapping));
  const ConvGeometry odd{2, 27, 27, 1, 32, 3, 3, 1, 1};  // a 25x25 output: "same" pooling pads it
  const PoolGeometry padded_pool = same_padded(pool_after(odd));
  ASSERT_TRUE(padded_pool.padded());
  EXPECT_FALSE(backend_->fuses_conv2d_max_pool(odd, padded_pool));
  EXPECT_TRUE(backend_->fuses_conv2d_max_pool(odd, pool_after(odd)));
  Floats buffer(static_cast<size_t>(x_count(strided) + strided.weight_count() + 64 * 1024), 0.0f);
  std::vector<uint8_t> argmax(64 * 1024);
  EXPECT_THROW(backend_->conv2d_max_pool_forward(strided, pool_after(strided), true, buffer.data(), buffer.data(),
                                                 nullptr, buffer.data(), argmax.data()),
               InvalidArgument);
}

}  // namespace
}  // namespace mirror
