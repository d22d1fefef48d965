// The host's element-wise tensor ops: dropout, add and column copies (activations are in
// host_activations.cpp). The math is engine/elementwise.hpp's, shared with the CUDA kernels; here
// it is only laid over OpenMP loops. Every element is written by exactly one thread, so results do
// not depend on the thread count.
#include "mirror/engine/elementwise.hpp"
#include "mirror/engine/host/host_backend_impl.hpp"

namespace mirror::host {
namespace {

void check_dropout(const DropoutSpec& s, int64_t rows, int64_t cols) {
  MIRROR_REQUIRE(s.rate >= 0.0f && s.rate < 1.0f, InvalidArgument, "dropout rate ", s.rate,
                 " is outside [0, 1): Keras's Dropout takes a rate in [0, 1)");
  MIRROR_REQUIRE(rows >= 0 && cols >= 0 && s.first_row >= 0, InvalidArgument, "invalid dropout sizes: ", rows,
                 " rows of ", cols, " columns from global row ", s.first_row);
}

}  // namespace

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
