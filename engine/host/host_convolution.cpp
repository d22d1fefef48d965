// The host's 2-D convolution: oneDNN primitives on NHWC activations and HWIO (Keras) weights,
// with explicit (possibly asymmetric) zero padding and an optional bias. Following oneDNN's own
// advice: describe once per geometry, create once, cache, execute many times. Execution goes
// through the C API with argument arrays built at creation, so a call allocates nothing.
#include <algorithm>
#include <string>

#include "mirror/engine/host/host_backend_impl.hpp"

namespace mirror::host {
namespace {

using dnnl::memory;
using tag = memory::format_tag;

void check_geometry(const ConvGeometry& g) {
  MIRROR_REQUIRE(g.batch >= 0 && g.in_c > 0 && g.out_c > 0 && g.kernel_h > 0 && g.kernel_w > 0 &&
                     g.stride_h > 0 && g.stride_w > 0 && g.pad_top >= 0 && g.pad_left >= 0 && g.pad_bottom >= 0 &&
                     g.pad_right >= 0 && g.in_h + g.pad_top + g.pad_bottom >= g.kernel_h &&
                     g.in_w + g.pad_left + g.pad_right >= g.kernel_w,
                 InvalidArgument, "invalid convolution geometry: input ", g.in_h, "x", g.in_w, "x", g.in_c,
                 ", kernel ", g.kernel_h, "x", g.kernel_w, " -> ", g.out_c, " channels, strides ", g.stride_h,
                 "x", g.stride_w, ", padding top/left/bottom/right ", g.pad_top, "/", g.pad_left, "/", g.pad_bottom,
                 "/", g.pad_right, " (the kernel must fit in the padded input; nothing may be negative)");
}

// Sets up `layout` when `wanted` differs from the caller's HWIO weights; returns the memory the
// primitive should use (the caller's or the internal one).
memory weights_for(const memory::desc& wanted, const memory& user, bool into_user, const dnnl::engine& engine,
                   WeightLayout& layout) {
  if (wanted == user.get_desc()) return user;
  MIRROR_DNNL_TRY(layout.internal = memory(wanted, engine));
  const memory& from = into_user ? layout.internal : user;
  const memory& to = into_user ? user : layout.internal;
  MIRROR_DNNL_TRY(layout.reorder = dnnl::reorder(from, to));
  layout.args = {{DNNL_ARG_FROM, from.get()}, {DNNL_ARG_TO, to.get()}};
  return layout.internal;
}

void run_reorder(const WeightLayout& layout, const dnnl::stream& stream) {
  if (layout.args.empty()) return;
  execute(layout.reorder, stream, layout.args);
}

// The dimensions oneDNN's descriptors take: strides and the padding before and after each
// spatial dimension (they differ for "same" padding with strides).
struct ConvDims {
  memory::dims strides, padding_l, padding_r;
};

// A zero descriptor for the bias tells oneDNN that the convolution has none.
memory::desc bias_desc(const ConvPrimitives& c) { return c.has_bias ? c.b.get_desc() : memory::desc(); }

void build_forward(ConvForward& f, ConvPrimitives& c, const dnnl::engine& engine, const memory::desc& weights_any,
                   const ConvDims& d, const dnnl::primitive_attr& attr) {
  const dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                                             c.x.get_desc(), weights_any, bias_desc(c), c.y.get_desc(), d.strides,
                                             d.padding_l, d.padding_r);
  MIRROR_DNNL_TRY(f.pd = dnnl::convolution_forward::primitive_desc(desc, attr, engine));
  MIRROR_DNNL_TRY(f.primitive = dnnl::convolution_forward(f.pd));
  const memory w = weights_for(f.pd.weights_desc(), c.w, false, engine, f.weights);
  MIRROR_DNNL_TRY(f.scratch = memory(f.pd.scratchpad_desc(), engine));
  f.args = {{DNNL_ARG_SRC, c.x.get()},
            {DNNL_ARG_WEIGHTS, w.get()},
            {DNNL_ARG_DST, c.y.get()},
            {DNNL_ARG_SCRATCHPAD, f.scratch.get()}};
  if (c.has_bias) f.args.push_back({DNNL_ARG_BIAS, c.b.get()});
}

// Primitive attributes: user-managed scratchpads. (A copy of a dnnl::primitive_attr shares its
// handle, so each primitive gets its own.) No ReLU post-op: oneDNN's ReLU turns NaN into 0.
dnnl::primitive_attr make_attr() {
  dnnl::primitive_attr attr;
  MIRROR_DNNL_TRY(attr.set_scratchpad_mode(dnnl::scratchpad_mode::user));
  return attr;
}

void build_backward(ConvPrimitives& c, const dnnl::engine& engine, const memory::desc& weights_any, const ConvDims& d,
                    const dnnl::primitive_attr& attr) {
  const dnnl::convolution_backward_weights::desc weights_desc(dnnl::algorithm::convolution_direct, c.x.get_desc(),
                                                              weights_any, bias_desc(c), c.y.get_desc(), d.strides,
                                                              d.padding_l, d.padding_r);
  MIRROR_DNNL_TRY(c.backward_weights_pd =
                      dnnl::convolution_backward_weights::primitive_desc(weights_desc, attr, engine, c.forward.pd));
  MIRROR_DNNL_TRY(c.backward_weights = dnnl::convolution_backward_weights(c.backward_weights_pd));
  const memory dw = weights_for(c.backward_weights_pd.diff_weights_desc(), c.w, true, engine, c.backward_diff_weights);
  MIRROR_DNNL_TRY(c.backward_weights_scratch = memory(c.backward_weights_pd.scratchpad_desc(), engine));
  c.backward_weights_args = {{DNNL_ARG_SRC, c.x.get()},
                             {DNNL_ARG_DIFF_DST, c.y.get()},
                             {DNNL_ARG_DIFF_WEIGHTS, dw.get()},
                             {DNNL_ARG_SCRATCHPAD, c.backward_weights_scratch.get()}};
  if (c.has_bias) c.backward_weights_args.push_back({DNNL_ARG_DIFF_BIAS, c.b.get()});

  const dnnl::convolution_backward_data::desc data_desc(dnnl::algorithm::convolution_direct, c.x.get_desc(),
                                                        weights_any, c.y.get_desc(), d.strides, d.padding_l,
                                                        d.padding_r);
  MIRROR_DNNL_TRY(c.backward_data_pd =
                      dnnl::convolution_backward_data::primitive_desc(data_desc, attr, engine, c.forward.pd));
  MIRROR_DNNL_TRY(c.backward_data = dnnl::convolution_backward_data(c.backward_data_pd));
  const memory w = weights_for(c.backward_data_pd.weights_desc(), c.w, false, engine, c.backward_data_weights);
  MIRROR_DNNL_TRY(c.backward_data_scratch = memory(c.backward_data_pd.scratchpad_desc(), engine));
  c.backward_data_args = {{DNNL_ARG_DIFF_DST, c.y.get()},
                          {DNNL_ARG_WEIGHTS, w.get()},
                          {DNNL_ARG_DIFF_SRC, c.x.get()},
                          {DNNL_ARG_SCRATCHPAD, c.backward_data_scratch.get()}};
}

// oneDNN 2.6 runs a strided 1x1 convolution through its "reduce to unit stride" path, which
// writes past its buffers for some channel counts (4 -> 6 channels, stride 2, 8x8: found by
// valgrind). A strided 1x1 convolution without padding is a unit-stride one over the subsampled
// input, so the host runs it that way and never takes that path.
bool strided_pointwise(const ConvGeometry& g) {
  return g.kernel_h == 1 && g.kernel_w == 1 && (g.stride_h > 1 || g.stride_w > 1) && !g.padded();
}

// The same convolution on the subsampled input: (batch, out_h, out_w, in_c), stride 1.
ConvGeometry unit_stride(const ConvGeometry& g) {
  ConvGeometry u = g;
  u.in_h = g.out_h();
  u.in_w = g.out_w();
  u.stride_h = u.stride_w = 1;
  return u;
}

// xs[n, i, j, :] = x[n, i * stride_h, j * stride_w, :], or the reverse into a zeroed x (scatter).
void resample(const ConvGeometry& g, const float* from, float* to, bool scatter) {
  const int64_t out_h = g.out_h(), out_w = g.out_w(), c = g.in_c;
  if (scatter) std::fill(to, to + g.batch * g.in_h * g.in_w * c, 0.0f);
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t i = 0; i < out_h; ++i)
      for (int64_t j = 0; j < out_w; ++j) {
        const int64_t full = ((n * g.in_h + i * g.stride_h) * g.in_w + j * g.stride_w) * c;
        const int64_t sub = ((n * out_h + i) * out_w + j) * c;
        if (scatter) {
          std::copy(from + sub, from + sub + c, to + full);
        } else {
          std::copy(from + full, from + full + c, to + sub);
        }
      }
}

}  // namespace

float* HostBackend::pointwise_scratch(size_t count) {
  if (pointwise_scratch_.size() < count) pointwise_scratch_.resize(count);
  return pointwise_scratch_.data();
}

const float* HostBackend::pointwise_input(const ConvGeometry& g, const float* x) {
  if (!strided_pointwise(g)) return x;
  const ConvGeometry u = unit_stride(g);
  float* xs = pointwise_scratch(static_cast<size_t>(u.batch * u.in_h * u.in_w * u.in_c));
  resample(g, x, xs, false);
  return xs;
}

ConvPrimitives& HostBackend::conv_primitives(const ConvGeometry& g, bool has_bias) {
  for (auto& [geometry, primitives] : conv_cache_)
    if (geometry == g && primitives->has_bias == has_bias) return *primitives;
  check_geometry(g);

  auto c = std::make_unique<ConvPrimitives>();
  c->has_bias = has_bias;
  const memory::dims src_dims{g.batch, g.in_c, g.in_h, g.in_w};
  const memory::dims weights_dims{g.out_c, g.in_c, g.kernel_h, g.kernel_w};
  const memory::dims dst_dims{g.batch, g.out_c, g.out_h(), g.out_w()};
  const auto f32 = memory::data_type::f32;
  // Memory objects without a buffer: each call points them at the caller's tensors.
  MIRROR_DNNL_TRY(c->x = memory({src_dims, f32, tag::nhwc}, engine_, DNNL_MEMORY_NONE));
  MIRROR_DNNL_TRY(c->w = memory({weights_dims, f32, tag::hwio}, engine_, DNNL_MEMORY_NONE));
  MIRROR_DNNL_TRY(c->b = memory({{g.out_c}, f32, tag::x}, engine_, DNNL_MEMORY_NONE));
  MIRROR_DNNL_TRY(c->y = memory({dst_dims, f32, tag::nhwc}, engine_, DNNL_MEMORY_NONE));

  // `any` lets oneDNN pick its fastest weight layout (reordered per call, cheap next to the
  // convolution since weights are small).
  const ConvDims d{{g.stride_h, g.stride_w}, {g.pad_top, g.pad_left}, {g.pad_bottom, g.pad_right}};
  const memory::desc weights_any(weights_dims, f32, tag::any);
  build_forward(c->forward, *c, engine_, weights_any, d, make_attr());
  build_backward(*c, engine_, weights_any, d, make_attr());

  conv_cache_.emplace_back(g, std::move(c));
  return *conv_cache_.back().second;
}

void HostBackend::conv2d_forward(const ConvGeometry& given, const float* x, const float* w, const float* b, float* y) {
  if (given.batch == 0) return;
  const ConvGeometry g = strided_pointwise(given) ? unit_stride(given) : given;
  x = pointwise_input(given, x);
  ConvPrimitives& c = conv_primitives(g, b != nullptr);
  const ConvForward& f = c.forward;
  set_handle(c.x, x);
  set_handle(c.w, w);
  set_handle(c.b, b);
  set_handle(c.y, y);
  run_reorder(f.weights, stream_);
  execute(f.primitive, stream_, f.args);
  MIRROR_DNNL_CHECK(dnnl_stream_wait(stream_.get()));
}

// The ReLU is Mirror's own pass over y (ew::relu), which keeps NaN, where oneDNN's ReLU post-op
// (a maxps against zero) turned it into 0 and hid a diverged kernel from the loss.
void HostBackend::conv2d_relu_forward(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y) {
  conv2d_forward(g, x, w, b, y);
  activation_forward(Activation::ReLU, 1, g.batch * g.out_h() * g.out_w() * g.out_c, y, y);
}

void HostBackend::conv2d_backward_weights(const ConvGeometry& given, const float* x, const float* dy, float* dw,
                                          float* db) {
  if (given.batch == 0) return;
  const ConvGeometry g = strided_pointwise(given) ? unit_stride(given) : given;
  x = pointwise_input(given, x);
  ConvPrimitives& c = conv_primitives(g, db != nullptr);
  set_handle(c.x, x);
  set_handle(c.y, dy);
  set_handle(c.w, dw);
  set_handle(c.b, db);
  execute(c.backward_weights, stream_, c.backward_weights_args);
  run_reorder(c.backward_diff_weights, stream_);
  MIRROR_DNNL_CHECK(dnnl_stream_wait(stream_.get()));
}

void HostBackend::conv2d_backward_data(const ConvGeometry& given, const float* w, const float* dy, float* dx) {
  if (given.batch == 0) return;
  if (strided_pointwise(given)) {
    const ConvGeometry g = unit_stride(given);
    float* dxs = pointwise_scratch(static_cast<size_t>(g.batch * g.in_h * g.in_w * g.in_c));
    conv2d_backward_data(g, w, dy, dxs);
    resample(given, dxs, dx, true);
    return;
  }
  const ConvGeometry& g = given;
  // Backward-data has no bias: any cached set for this geometry serves (forward made one already).
  ConvPrimitives* found = nullptr;
  for (auto& [geometry, primitives] : conv_cache_)
    if (geometry == g) found = primitives.get();
  ConvPrimitives& c = found ? *found : conv_primitives(g, false);
  set_handle(c.w, w);
  set_handle(c.y, dy);
  set_handle(c.x, dx);
  run_reorder(c.backward_data_weights, stream_);
  execute(c.backward_data, stream_, c.backward_data_args);
  MIRROR_DNNL_CHECK(dnnl_stream_wait(stream_.get()));
}

}  // namespace mirror::host
