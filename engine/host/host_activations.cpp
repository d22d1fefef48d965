// The host's activations. ReLU, softmax and the derivatives taken from the output (ReLU, sigmoid,
// tanh) run engine/elementwise.hpp's shared formulas over OpenMP loops. The activations that need
// exp, erf or tanh per element (sigmoid, tanh, GELU, SiLU forward; GELU and SiLU backward, which
// read the input) run oneDNN's eltwise primitives instead: libm evaluates those functions one
// element at a time, oneDNN in vector registers. Measured here on 32 x 56 x 56 x 64 floats
// (2 threads): GELU forward 137 ms -> 6.9 ms, tanh 189 -> 34, sigmoid 55 -> 2.9, SiLU 51 -> 7.6;
// GELU backward 185 -> 7.3, SiLU backward 63 -> 13. Sigmoid and tanh backward stay plain (2.2 ms,
// against oneDNN's 13 and 43, which recompute the function from the input).
#include <cstring>

#include "mirror/engine/elementwise.hpp"
#include "mirror/engine/host/host_backend_impl.hpp"

namespace mirror::host {
namespace {

using dnnl::memory;

// The activation is a template argument so that ew::activation's switch folds away and the loop
// is one formula.
// The loops are hot_loops (cpu_isa.hpp): ReLU's ran 1.7-4.5x slower at the SSE2 baseline than with AVX2.
template <Activation A>
void forward_elements(int threads, int64_t n, const float* x, float* y) {
  for_chunks(threads, 0, n, [&](int64_t begin, int64_t end) {
    hot_loop([&]() MIRROR_ALWAYS_INLINE {
      for (int64_t i = begin; i < end; ++i) y[i] = ew::activation(A, x[i]);
    });
  });
}

// x or y may be null where the activation does not read it (backward_needs_input).
template <Activation A>
void backward_elements(int threads, int64_t n, const float* x, const float* y, const float* dy, float* dx) {
  constexpr bool kNeedsX = backward_needs_input(A);
  for_chunks(threads, 0, n, [&](int64_t begin, int64_t end) {
    hot_loop([&]() MIRROR_ALWAYS_INLINE {
      for (int64_t i = begin; i < end; ++i)
        dx[i] = ew::activation_grad(A, kNeedsX ? x[i] : 0.0f, kNeedsX ? 0.0f : y[i], dy[i]);
    });
  });
}

void copy_unless_same(const float* src, float* dst, int64_t count) {
  if (src != dst && count > 0) std::memmove(dst, src, static_cast<size_t>(count) * sizeof(float));
}

// oneDNN's algorithm and alpha for an activation: SiLU is swish with alpha = 1, x sigmoid(x);
// GELU is the exact erf form, Keras's default.
dnnl::algorithm eltwise_algorithm(Activation a) {
  switch (a) {
    case Activation::Sigmoid: return dnnl::algorithm::eltwise_logistic;
    case Activation::Tanh: return dnnl::algorithm::eltwise_tanh;
    case Activation::GELU: return dnnl::algorithm::eltwise_gelu_erf;
    case Activation::SiLU: return dnnl::algorithm::eltwise_swish;
    default: break;
  }
  throw InvalidArgument(str("no oneDNN eltwise algorithm is used for activation '", to_string(a), "'"));
}

}  // namespace

EltwisePrimitive& HostBackend::eltwise_primitive(Activation act, bool backward, int64_t count) {
  for (auto& e : eltwise_cache_)
    if (e->activation == act && e->backward == backward && e->count == count) return *e;
  auto e = std::make_unique<EltwisePrimitive>();
  e->activation = act, e->backward = backward, e->count = count;
  const memory::desc flat({count}, memory::data_type::f32, memory::format_tag::x);
  for (memory* m : {&e->src, &e->dst, &e->diff_dst, &e->diff_src})
    MIRROR_DNNL_TRY(*m = memory(flat, engine_, DNNL_MEMORY_NONE));
  // User-managed scratchpads, so this object owns all the memory the primitive uses.
  dnnl::primitive_attr attr;
  MIRROR_DNNL_TRY(attr.set_scratchpad_mode(dnnl::scratchpad_mode::user));
  const dnnl::algorithm algorithm = eltwise_algorithm(act);
  const float alpha = act == Activation::SiLU ? 1.0f : 0.0f;
  const dnnl::eltwise_forward::desc forward_desc(dnnl::prop_kind::forward_training, algorithm, flat, alpha, 0.0f);
  dnnl::eltwise_forward::primitive_desc forward_pd;
  MIRROR_DNNL_TRY(forward_pd = dnnl::eltwise_forward::primitive_desc(forward_desc, attr, engine_));
  if (!backward) {
    MIRROR_DNNL_TRY(e->primitive = dnnl::eltwise_forward(forward_pd));
    MIRROR_DNNL_TRY(e->scratch = memory(forward_pd.scratchpad_desc(), engine_));
    e->args = {{DNNL_ARG_SRC, e->src.get()}, {DNNL_ARG_DST, e->dst.get()}, {DNNL_ARG_SCRATCHPAD, e->scratch.get()}};
  } else {
    const dnnl::eltwise_backward::desc backward_desc(algorithm, flat, flat, alpha, 0.0f);
    dnnl::eltwise_backward::primitive_desc backward_pd;
    MIRROR_DNNL_TRY(backward_pd = dnnl::eltwise_backward::primitive_desc(backward_desc, attr, engine_, forward_pd));
    MIRROR_DNNL_TRY(e->primitive = dnnl::eltwise_backward(backward_pd));
    MIRROR_DNNL_TRY(e->scratch = memory(backward_pd.scratchpad_desc(), engine_));
    e->args = {{DNNL_ARG_SRC, e->src.get()},
               {DNNL_ARG_DIFF_DST, e->diff_dst.get()},
               {DNNL_ARG_DIFF_SRC, e->diff_src.get()},
               {DNNL_ARG_SCRATCHPAD, e->scratch.get()}};
  }
  eltwise_cache_.push_back(std::move(e));
  return *eltwise_cache_.back();
}

void HostBackend::activation_forward(Activation act, int64_t rows, int64_t cols, const float* x, float* y) {
  const int64_t n = rows * cols;
  switch (act) {
    case Activation::Linear: return copy_unless_same(x, y, n);
    case Activation::ReLU: return forward_elements<Activation::ReLU>(threads_, n, x, y);
    case Activation::Softmax:
      copy_unless_same(x, y, n);
#pragma omp parallel for num_threads(threads_) if (n >= kParallelMinCount)
      for (int64_t r = 0; r < rows; ++r) ew::softmax_row(y + r * cols, cols);
      return;
    case Activation::Sigmoid:
    case Activation::Tanh:
    case Activation::GELU:
    case Activation::SiLU: {
      if (n == 0) return;
      EltwisePrimitive& e = eltwise_primitive(act, false, n);
      set_handle(e.src, x);
      set_handle(e.dst, y);
      execute(e.primitive, stream_, e.args);
      MIRROR_DNNL_CHECK(dnnl_stream_wait(stream_.get()));
      return;
    }
  }
}

void HostBackend::activation_backward(Activation act, int64_t rows, int64_t cols, const float* x, const float* y,
                                      const float* dy, float* dx) {
  const int64_t n = rows * cols;
  switch (act) {
    case Activation::Linear: return copy_unless_same(dy, dx, n);
    case Activation::ReLU: return backward_elements<Activation::ReLU>(threads_, n, x, y, dy, dx);
    case Activation::Sigmoid: return backward_elements<Activation::Sigmoid>(threads_, n, x, y, dy, dx);
    case Activation::Tanh: return backward_elements<Activation::Tanh>(threads_, n, x, y, dy, dx);
    case Activation::Softmax:
      copy_unless_same(dy, dx, n);
#pragma omp parallel for num_threads(threads_) if (n >= kParallelMinCount)
      for (int64_t r = 0; r < rows; ++r) ew::softmax_backward_row(y + r * cols, dx + r * cols, cols);
      return;
    case Activation::GELU:
    case Activation::SiLU: {
      if (n == 0) return;
      EltwisePrimitive& e = eltwise_primitive(act, true, n);
      set_handle(e.src, x);
      set_handle(e.diff_dst, dy);
      set_handle(e.diff_src, dx);
      execute(e.primitive, stream_, e.args);
      MIRROR_DNNL_CHECK(dnnl_stream_wait(stream_.get()));
      return;
    }
  }
}

}  // namespace mirror::host
