// How a layer with an `activation=` argument (Conv2D, Dense) applies it: in place on its output,
// keeping the pre-activation in scratch only when the derivative needs it (GELU, SiLU).
#pragma once

#include "mirror/model/layer.hpp"

namespace mirror::layer_util {

// Scratch floats per sample for a layer whose output has `cols` values per sample.
inline size_t activation_scratch(Activation act, int64_t cols) {
  return backward_needs_input(act) ? static_cast<size_t>(cols) : 0;
}

// Where the layer's op should write its pre-activation output: scratch when it must be kept, else y.
inline float* pre_activation(Activation act, float* y, float* scratch) { return backward_needs_input(act) ? scratch : y; }

// y = act(pre) for `rows` rows of `cols` (softmax over each row). `pre` may be y.
inline void activation_forward(const LayerContext& ctx, Activation act, int64_t rows, int64_t cols, const float* pre,
                               float* y) {
  if (act == Activation::Linear && pre == y) return;
  ctx.backend.activation_forward(act, rows, cols, pre, y);
}

// dy := dL/d(pre-activation), in place, unless a fusion already did it.
inline void activation_backward(const BackwardArgs& a, Activation act, int64_t rows, int64_t cols) {
  if (act == Activation::Linear || a.fusion.activation_done) return;
  a.ctx.backend.activation_backward(act, rows, cols, backward_needs_input(act) ? a.scratch : nullptr, a.output, a.dy,
                                    a.dy);
}

}  // namespace mirror::layer_util
