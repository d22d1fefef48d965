// The instruction-set variants of the host's hot loops (engine/host/cpu_isa.hpp) give the same
// bits: every loop that has variants (activations, max pooling forward and backward on each of its
// paths, the convolution fused with pooling, the optimizers' update) runs under every variant this
// CPU can execute, on inputs with NaN, infinities, signed zeros and subnormals, and each result
// must equal the baseline variant's to the bit. The optimizers are also checked against their
// scalar rule under every variant (test_optimizers.cpp).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "isa_test_util.hpp"
#include "mirror/engine/error.hpp"
#include "mirror/engine/host/cpu_isa.hpp"
#include "op_test_util.hpp"

namespace mirror {
namespace {

using namespace mirror::testing;
using host::CpuIsa;

// Random values with the awkward ones sprinkled in at fixed places.
Floats awkward_floats(size_t count, std::mt19937& rng) {
  Floats v = random_floats(count, rng);
  const float specials[] = {kNaN, std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                            0.0f, -0.0f, std::numeric_limits<float>::denorm_min(), -1e-40f, 3.0f, -3.0f};
  for (size_t i = 0; i < count; i += 37) v[i] = specials[(i / 37) % std::size(specials)];
  return v;
}

// One run of some hot loops: their outputs, concatenated.
using Run = std::function<Floats(Backend&)>;

struct NamedRun {
  std::string name;
  Run run;
};

std::vector<NamedRun> runs(std::mt19937& rng) {
  std::vector<NamedRun> all;
  const size_t n = 70001;  // above the parallel threshold, odd: the vector loops' remainders run
  const Floats x = awkward_floats(n, rng), dy = awkward_floats(n, rng);
  for (Activation a : {Activation::ReLU, Activation::Sigmoid, Activation::Tanh}) {
    all.push_back({"activation " + std::string(to_string(a)), [=](Backend& b) {
                     Floats y(n), dx(n);
                     b.activation_forward(a, 1, n, x.data(), y.data());
                     b.activation_backward(a, 1, n, x.data(), y.data(), dy.data(), dx.data());
                     y.insert(y.end(), dx.begin(), dx.end());
                     return y;
                   }});
  }
  // Max pooling: plain 2x2 windows (forward's 2x2 path, backward's direct path with and without
  // ReLU's mask), overlapping padded 3x3 windows (the general paths).
  const PoolGeometry tiles{4, 12, 14, 40, 2, 2, 2, 2};
  const PoolGeometry overlapping{3, 11, 9, 72, 3, 3, 2, 2, 1, 1, 1, 1};
  for (const PoolGeometry& g : {tiles, overlapping}) {
    const Floats px = awkward_floats(size_t(g.batch * g.in_h * g.in_w * g.channels), rng);
    const Floats pdy = awkward_floats(size_t(g.batch * g.out_h() * g.out_w() * g.channels), rng);
    all.push_back({"max pooling " + std::to_string(g.pool_h) + "x" + std::to_string(g.pool_w), [=](Backend& b) {
                     Floats y(pdy.size()), dx(px.size()), dx_relu(px.size());
                     b.max_pool_forward(g, px.data(), y.data());
                     b.max_pool_backward(g, px.data(), y.data(), pdy.data(), dx.data());
                     b.max_pool_relu_backward(g, px.data(), y.data(), pdy.data(), dx_relu.data());
                     y.insert(y.end(), dx.begin(), dx.end());
                     y.insert(y.end(), dx_relu.begin(), dx_relu.end());
                     return y;
                   }});
  }
  // The fused convolution and pooling, on each of its kernel instantiations.
  const ConvGeometry convs[] = {{5, 12, 12, 1, 16, 3, 3}, {3, 10, 11, 4, 16, 3, 3}, {2, 9, 9, 2, 8, 2, 3}};
  for (const ConvGeometry& g : convs) {
    const PoolGeometry p{g.batch, g.out_h(), g.out_w(), g.out_c, 2, 2, 2, 2};
    const Floats cx = awkward_floats(size_t(g.batch * g.in_h * g.in_w * g.in_c), rng);
    const Floats w = random_floats(size_t(g.weight_count()), rng), bias = random_floats(size_t(g.out_c), rng);
    const size_t pooled = size_t(p.batch * p.out_h() * p.out_w() * p.channels);
    const Floats cdy = random_floats(pooled, rng);
    for (bool relu : {true, false}) {
      all.push_back({"conv+pool " + std::to_string(g.kernel_h) + "x" + std::to_string(g.kernel_w) + "x" +
                         std::to_string(g.in_c) + (relu ? " relu" : ""),
                     [=](Backend& b) {
                       Floats y(pooled), dw(size_t(g.weight_count())), db(size_t(g.out_c));
                       std::vector<uint8_t> argmax(pooled);
                       b.conv2d_max_pool_forward(g, p, relu, cx.data(), w.data(), bias.data(), y.data(),
                                                 argmax.data());
                       b.conv2d_max_pool_backward(g, p, cx.data(), w.data(), cdy.data(), argmax.data(), dw.data(),
                                                  db.data(), nullptr);
                       y.insert(y.end(), dw.begin(), dw.end());
                       y.insert(y.end(), db.begin(), db.end());
                       for (uint8_t a : argmax) y.push_back(float(a));
                       return y;
                     }});
    }
  }
  return all;
}

bool same_bits(float a, float b) { return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b); }

TEST(HostIsa, EveryVariantComputesTheBaselineBits) {
  auto backend = make_host_backend(2);
  backend->bind_current_thread();
  std::mt19937 rng(20261208);
  const std::vector<NamedRun> all = runs(rng);
  std::vector<Floats> baseline;
  {
    ScopedIsa scoped(CpuIsa::Baseline);
    for (const NamedRun& r : all) baseline.push_back(r.run(*backend));
  }
  int variants = 0;
  for_each_runnable_isa([&](CpuIsa isa) {
    ++variants;
    for (size_t k = 0; k < all.size(); ++k) {
      SCOPED_TRACE(all[k].name);
      const Floats got = all[k].run(*backend);
      ASSERT_EQ(got.size(), baseline[k].size());
      size_t bad = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        if (same_bits(got[i], baseline[k][i])) continue;
        if (++bad <= 3)
          ADD_FAILURE() << "element " << i << ": " << host::to_string(isa) << " gives " << got[i] << ", baseline "
                        << baseline[k][i];
      }
      EXPECT_EQ(bad, 0u) << bad << " of " << got.size() << " elements differ from the baseline variant's bits";
    }
  });
  EXPECT_GE(variants, 1);
}

TEST(HostIsa, TheActiveVariantIsOneTheCpuRuns) {
  EXPECT_TRUE(host::cpu_supports(host::active_isa()));
  EXPECT_TRUE(host::cpu_supports(CpuIsa::Baseline));
  for (CpuIsa isa : {CpuIsa::Baseline, CpuIsa::Avx2, CpuIsa::Avx512}) {
    bool compiled = false;
    for (CpuIsa c : host::compiled_isas()) compiled = compiled || c == isa;
    if (compiled && host::cpu_supports(isa)) {
      ScopedIsa scoped(isa);
      EXPECT_EQ(host::active_isa(), isa);
    } else {
      EXPECT_THROW(host::set_active_isa(isa), InvalidArgument) << host::to_string(isa);
    }
  }
}

}  // namespace
}  // namespace mirror
