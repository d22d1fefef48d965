// CudaBackend, part 2: the layer ops (cuDNN convolutions, cuBLAS dense, own kernels for pooling,
// bias, activations, dropout and tensor copies). Batch normalization, losses, metrics and the
// optimizers are in cuda_training_ops.cpp.
#include <climits>

#include "mirror/engine/cuda/cuda_backend_impl.hpp"
#include "mirror/engine/cuda/kernels.hpp"

namespace mirror::cuda {
namespace {

int blas_int(int64_t value, const char* what) {
  MIRROR_REQUIRE(value >= 0 && value <= INT_MAX, InvalidArgument, "dense ", what, " = ", value,
                 " is outside what cuBLAS accepts (0 .. ", INT_MAX, ")");
  return static_cast<int>(value);
}

// The pooling kernels assume windows that fit and paddings smaller than their windows (so that no
// window is all padding, which Keras's "same" padding never makes).
void check_pool_geometry(const PoolGeometry& g) {
  MIRROR_REQUIRE(g.batch >= 0 && g.in_h > 0 && g.in_w > 0 && g.channels > 0 && g.pool_h > 0 && g.pool_w > 0 &&
                     g.stride_h > 0 && g.stride_w > 0 && g.pad_top >= 0 && g.pad_left >= 0 && g.pad_bottom >= 0 &&
                     g.pad_right >= 0 && g.pad_top < g.pool_h && g.pad_bottom < g.pool_h && g.pad_left < g.pool_w &&
                     g.pad_right < g.pool_w && g.out_h() >= 1 && g.out_w() >= 1,
                 InvalidArgument, "invalid pooling geometry: input ", g.in_h, "x", g.in_w, "x", g.channels, ", pool ",
                 g.pool_h, "x", g.pool_w, ", strides ", g.stride_h, "x", g.stride_w, ", padding ", g.pad_top, ", ",
                 g.pad_left, ", ", g.pad_bottom, ", ", g.pad_right,
                 " (top, left, bottom, right; each must be smaller than the pool, and the pool must fit)");
}

}  // namespace

void CudaBackend::column_sums(int64_t rows, int64_t cols, const float* dy, float* db) {
  if (ones_.count() < static_cast<size_t>(rows)) {
    ones_ = allocate(static_cast<size_t>(rows) * sizeof(float));
    kernels::fill(stream_.get(), ones_.as<float>(), ones_.count(), 1.0f);
  }
  // Row-major dy (rows, cols) is column-major (cols, rows): db = dy_cm * ones.
  const float one = 1.0f, zero = 0.0f;
  MIRROR_CUBLAS_CHECK(cublasSgemv(cublas_.get(), CUBLAS_OP_N, blas_int(cols, "columns"), blas_int(rows, "rows"), &one,
                                  dy, blas_int(cols, "columns"), ones_.as<float>(), 1, &zero, db, 1));
}

// ---- convolution ----

void CudaBackend::conv2d_forward(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y) {
  if (g.batch == 0) return;
  activate();
  convolutions_->forward(g, x, w, y);
  kernels::bias_activation(stream_.get(), g.batch * g.out_h() * g.out_w(), g.out_c, b, Activation::Linear, y);
}

// The bias and the ReLU in one pass over y.
void CudaBackend::conv2d_relu_forward(const ConvGeometry& g, const float* x, const float* w, const float* b,
                                      float* y) {
  if (g.batch == 0) return;
  activate();
  convolutions_->forward(g, x, w, y);
  kernels::bias_activation(stream_.get(), g.batch * g.out_h() * g.out_w(), g.out_c, b, Activation::ReLU, y);
}

void CudaBackend::conv2d_backward_weights(const ConvGeometry& g, const float* x, const float* dy, float* dw,
                                          float* db) {
  if (g.batch == 0) return;
  activate();
  convolutions_->backward_weights(g, x, dy, dw);
  if (db) column_sums(g.batch * g.out_h() * g.out_w(), g.out_c, dy, db);
}

void CudaBackend::conv2d_backward_data(const ConvGeometry& g, const float* w, const float* dy, float* dx) {
  if (g.batch == 0) return;
  activate();
  convolutions_->backward_data(g, w, dy, dx);
}

// ---- pooling ----

void CudaBackend::max_pool_forward(const PoolGeometry& g, const float* x, float* y) {
  if (g.batch == 0) return;
  check_pool_geometry(g);
  activate();
  kernels::max_pool_forward(stream_.get(), g, x, y);
}

void CudaBackend::max_pool_backward(const PoolGeometry& g, const float* x, const float* /*y*/, const float* dy,
                                    float* dx) {
  if (g.batch == 0) return;
  check_pool_geometry(g);
  activate();
  kernels::max_pool_backward(stream_.get(), g, x, dy, false, dx);
}

// ReLU's derivative applied in the same pass, where each dx element is written once.
void CudaBackend::max_pool_relu_backward(const PoolGeometry& g, const float* x, const float* /*y*/, const float* dy,
                                         float* dx) {
  if (g.batch == 0) return;
  check_pool_geometry(g);
  activate();
  kernels::max_pool_backward(stream_.get(), g, x, dy, true, dx);
}

void CudaBackend::avg_pool_forward(const PoolGeometry& g, const float* x, float* y) {
  if (g.batch == 0) return;
  check_pool_geometry(g);
  activate();
  kernels::avg_pool_forward(stream_.get(), g, x, y);
}

void CudaBackend::avg_pool_backward(const PoolGeometry& g, const float* dy, float* dx) {
  if (g.batch == 0) return;
  check_pool_geometry(g);
  activate();
  kernels::avg_pool_backward(stream_.get(), g, dy, dx);
}

void CudaBackend::global_avg_pool_forward(int64_t batch, int64_t pixels, int64_t channels, const float* x, float* y) {
  if (batch == 0) return;
  MIRROR_REQUIRE(pixels > 0 && channels > 0, InvalidArgument, "global average pooling over ", pixels,
                 " pixels of ", channels, " channels");
  activate();
  kernels::global_avg_pool_forward(stream_.get(), batch, pixels, channels, x, y);
}

void CudaBackend::global_avg_pool_backward(int64_t batch, int64_t pixels, int64_t channels, const float* dy,
                                           float* dx) {
  if (batch == 0) return;
  MIRROR_REQUIRE(pixels > 0 && channels > 0, InvalidArgument, "global average pooling over ", pixels,
                 " pixels of ", channels, " channels");
  activate();
  kernels::global_avg_pool_backward(stream_.get(), batch, pixels, channels, dy, dx);
}

// ---- dense: row-major products through column-major cuBLAS ----
// A row-major (r, c) matrix is the column-major (c, r) one, so y = x w is computed as
// y^T = w^T x^T with every operand read in place.

void CudaBackend::dense_forward(int64_t rows, int64_t in, int64_t out, const float* x, const float* w,
                                const float* b, float* y) {
  if (rows == 0) return;
  activate();
  float beta = 0.0f;
  if (b) {
    kernels::broadcast_bias(stream_.get(), rows, out, b, y);  // y = b, then y += x w
    beta = 1.0f;
  }
  const float one = 1.0f;
  // y^T (out, rows) = w^T (out, in) * x^T (in, rows)
  MIRROR_CUBLAS_CHECK(cublasSgemm(cublas_.get(), CUBLAS_OP_N, CUBLAS_OP_N, blas_int(out, "out"), blas_int(rows, "rows"),
                                  blas_int(in, "in"), &one, w, blas_int(out, "out"), x, blas_int(in, "in"), &beta, y,
                                  blas_int(out, "out")));
}

void CudaBackend::dense_backward(int64_t rows, int64_t in, int64_t out, const float* x, const float* w,
                                 const float* dy, float* dx, float* dw, float* db) {
  if (rows == 0) return;
  activate();
  const float one = 1.0f, zero = 0.0f;
  const int r = blas_int(rows, "rows"), i = blas_int(in, "in"), o = blas_int(out, "out");
  // dw^T (out, in) = dy^T (out, rows) * x (rows, in)
  MIRROR_CUBLAS_CHECK(cublasSgemm(cublas_.get(), CUBLAS_OP_N, CUBLAS_OP_T, o, i, r, &one, dy, o, x, i, &zero, dw, o));
  if (db) column_sums(rows, out, dy, db);
  // dx^T (in, rows) = w (in, out) * dy^T (out, rows)
  if (dx) MIRROR_CUBLAS_CHECK(cublasSgemm(cublas_.get(), CUBLAS_OP_T, CUBLAS_OP_N, i, r, o, &one, w, o, dy, o, &zero, dx, i));
}

// ---- activations ----

void CudaBackend::activation_forward(Activation act, int64_t rows, int64_t cols, const float* x, float* y) {
  if (rows == 0) return;
  activate();
  if (act == Activation::Linear) return copy(x, y, static_cast<size_t>(rows * cols));
  kernels::activation_forward(stream_.get(), act, rows, cols, x, y);
}

void CudaBackend::activation_backward(Activation act, int64_t rows, int64_t cols, const float* x, const float* y,
                                      const float* dy, float* dx) {
  if (rows == 0) return;
  activate();
  if (act == Activation::Linear) return copy(dy, dx, static_cast<size_t>(rows * cols));
  kernels::activation_backward(stream_.get(), act, rows, cols, x, y, dy, dx);
}

// ---- dropout and tensors ----

void CudaBackend::dropout_forward(const DropoutSpec& spec, int64_t rows, int64_t cols, const float* x, float* y) {
  if (rows == 0) return;
  MIRROR_REQUIRE(spec.rate >= 0.0f && spec.rate < 1.0f && spec.first_row >= 0, InvalidArgument, "dropout rate ",
                 spec.rate, " from global row ", spec.first_row, ": Keras's Dropout takes a rate in [0, 1)");
  activate();
  kernels::dropout_forward(stream_.get(), spec, rows, cols, x, y);
}

// The same kernel as forward: the mask is drawn again from the same counters.
void CudaBackend::dropout_backward(const DropoutSpec& spec, int64_t rows, int64_t cols, const float* dy, float* dx) {
  dropout_forward(spec, rows, cols, dy, dx);
}

void CudaBackend::add(size_t count, const float* a, const float* b, float* y) {
  if (count == 0) return;
  activate();
  kernels::add(stream_.get(), count, a, b, y);
}

void CudaBackend::copy_columns(int64_t rows, int64_t cols, const float* src, int64_t src_stride, float* dst,
                               int64_t dst_stride, bool accumulate) {
  if (rows == 0 || cols == 0) return;
  MIRROR_REQUIRE(cols > 0 && src_stride >= cols && dst_stride >= cols, InvalidArgument, "copy_columns of ", cols,
                 " columns between rows ", src_stride, " and ", dst_stride, " floats apart");
  activate();
  kernels::copy_columns(stream_.get(), rows, cols, src, src_stride, dst, dst_stride, accumulate);
}

}  // namespace mirror::cuda
