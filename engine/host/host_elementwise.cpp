// The host's element-wise ops: activations, dropout, add and column copies. The math is
// engine/elementwise.hpp's, shared with the CUDA kernels; here it is only laid over OpenMP loops.
// Every element is written by exactly one thread, so results do not depend on the thread count.
#include <cstring>

#include "engine/elementwise.hpp"
#include "engine/host/host_backend_impl.hpp"

namespace mirror::host {
namespace {

// The activation is a template argument so that ew::activation's switch folds away and the loop
// is one formula.
template <Activation A>
void forward_elements(int threads, int64_t n, const float* x, float* y) {
#pragma omp parallel for num_threads(threads) if (n >= kParallelMinCount)
  for (int64_t i = 0; i < n; ++i) y[i] = ew::activation(A, x[i]);
}

// x or y may be null where the activation does not read it (backward_needs_input).
template <Activation A>
void backward_elements(int threads, int64_t n, const float* x, const float* y, const float* dy, float* dx) {
  const bool needs_x = backward_needs_input(A);
#pragma omp parallel for num_threads(threads) if (n >= kParallelMinCount)
  for (int64_t i = 0; i < n; ++i) dx[i] = ew::activation_grad(A, needs_x ? x[i] : 0.0f, needs_x ? 0.0f : y[i], dy[i]);
}

void copy_unless_same(const float* src, float* dst, int64_t count) {
  if (src != dst && count > 0) std::memmove(dst, src, static_cast<size_t>(count) * sizeof(float));
}

void check_dropout(const DropoutSpec& s, int64_t rows, int64_t cols) {
  MIRROR_REQUIRE(s.rate >= 0.0f && s.rate < 1.0f, InvalidArgument, "dropout rate ", s.rate,
                 " is outside [0, 1): Keras's Dropout takes a rate in [0, 1)");
  MIRROR_REQUIRE(rows >= 0 && cols >= 0 && s.first_row >= 0, InvalidArgument, "invalid dropout sizes: ", rows,
                 " rows of ", cols, " columns from global row ", s.first_row);
}

}  // namespace

void HostBackend::activation_forward(Activation act, int64_t rows, int64_t cols, const float* x, float* y) {
  const int64_t n = rows * cols;
  switch (act) {
    case Activation::Linear: return copy_unless_same(x, y, n);
    case Activation::ReLU: return forward_elements<Activation::ReLU>(threads_, n, x, y);
    case Activation::Sigmoid: return forward_elements<Activation::Sigmoid>(threads_, n, x, y);
    case Activation::Tanh: return forward_elements<Activation::Tanh>(threads_, n, x, y);
    case Activation::GELU: return forward_elements<Activation::GELU>(threads_, n, x, y);
    case Activation::SiLU: return forward_elements<Activation::SiLU>(threads_, n, x, y);
    case Activation::Softmax:
      copy_unless_same(x, y, n);
#pragma omp parallel for num_threads(threads_) if (n >= kParallelMinCount)
      for (int64_t r = 0; r < rows; ++r) ew::softmax_row(y + r * cols, cols);
      return;
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
    case Activation::GELU: return backward_elements<Activation::GELU>(threads_, n, x, y, dy, dx);
    case Activation::SiLU: return backward_elements<Activation::SiLU>(threads_, n, x, y, dy, dx);
    case Activation::Softmax:
      copy_unless_same(dy, dx, n);
#pragma omp parallel for num_threads(threads_) if (n >= kParallelMinCount)
      for (int64_t r = 0; r < rows; ++r) ew::softmax_backward_row(y + r * cols, dx + r * cols, cols);
      return;
  }
}

// ---- dropout ----

// Forward and backward are the same map: out = in * mask / (1 - rate), the mask drawn again from
// the counters.
void HostBackend::dropout_forward(const DropoutSpec& spec, int64_t rows, int64_t cols, const float* x, float* y) {
  check_dropout(spec, rows, cols);
  const float scale = ew::dropout_scale(spec);
  const int64_t first = spec.first_row * cols, n = rows * cols;
  // A Philox draw per element costs far more than a copy, so the parallel threshold is lower.
#pragma omp parallel for num_threads(threads_) if (n >= kParallelMinCount / 8)
  for (int64_t i = 0; i < n; ++i) y[i] = ew::dropout_keep(spec, first + i) ? x[i] * scale : 0.0f;
}

void HostBackend::dropout_backward(const DropoutSpec& spec, int64_t rows, int64_t cols, const float* dy, float* dx) {
  dropout_forward(spec, rows, cols, dy, dx);
}

// ---- tensors ----

void HostBackend::add(size_t count, const float* a, const float* b, float* y) {
  const auto n = static_cast<int64_t>(count);
#pragma omp parallel for num_threads(threads_) if (n >= kParallelMinCount)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void HostBackend::copy_columns(int64_t rows, int64_t cols, const float* src, int64_t src_stride, float* dst,
                               int64_t dst_stride, bool accumulate) {
  MIRROR_REQUIRE(rows >= 0 && cols >= 0 && src_stride >= cols && dst_stride >= cols, InvalidArgument,
                 "copy_columns: ", cols, " columns do not fit in rows of ", src_stride, " (source) and ", dst_stride,
                 " (destination) floats");
#pragma omp parallel for num_threads(threads_) if (rows * cols >= kParallelMinCount)
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = src + r * src_stride;
    float* out = dst + r * dst_stride;
    if (accumulate) {
      for (int64_t c = 0; c < cols; ++c) out[c] += in[c];
    } else {
      for (int64_t c = 0; c < cols; ++c) out[c] = in[c];
    }
  }
}

}  // namespace mirror::host
