// CudaBackend, part 2: the layer ops (cuDNN convolutions, cuBLAS dense, own kernels for pooling,
// bias and activations), the fused loss, and the fused optimizer steps.
#include <climits>

#include "engine/cuda/cuda_backend_impl.hpp"
#include "engine/cuda/kernels.hpp"

namespace mirror::cuda {
namespace {

int blas_int(int64_t value, const char* what) {
  MIRROR_REQUIRE(value >= 0 && value <= INT_MAX, InvalidArgument, "dense ", what, " = ", value,
                 " is outside what cuBLAS accepts (0 .. ", INT_MAX, ")");
  return static_cast<int>(value);
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
  if (b) kernels::add_bias(stream_.get(), g.batch * g.out_h() * g.out_w(), g.out_c, b, y);
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
  activate();
  kernels::max_pool_forward(stream_.get(), g, x, y);
}

void CudaBackend::max_pool_backward(const PoolGeometry& g, const float* x, const float* /*y*/, const float* dy,
                                    float* dx) {
  if (g.batch == 0) return;
  activate();
  kernels::max_pool_backward(stream_.get(), g, x, dy, dx);
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

// ---- activations and loss ----

void CudaBackend::activation_forward(Activation act, int64_t rows, int64_t cols, float* y) {
  if (rows == 0) return;
  activate();
  switch (act) {
    case Activation::Linear: return;
    case Activation::ReLU: return kernels::relu_forward(stream_.get(), static_cast<size_t>(rows * cols), y);
    case Activation::Softmax: return kernels::softmax_forward(stream_.get(), rows, cols, y);
  }
}

void CudaBackend::activation_backward(Activation act, int64_t rows, int64_t cols, const float* y, float* dy) {
  if (rows == 0) return;
  activate();
  switch (act) {
    case Activation::Linear: return;
    case Activation::ReLU: return kernels::relu_backward(stream_.get(), static_cast<size_t>(rows * cols), y, dy);
    case Activation::Softmax: return kernels::softmax_backward(stream_.get(), rows, cols, y, dy);
  }
}

void CudaBackend::sparse_categorical_crossentropy(int64_t rows, int64_t classes, const float* probs,
                                                  const int32_t* labels, float scale, bool from_softmax_logits,
                                                  float* dinput, float* stats) {
  if (rows == 0) return;
  activate();
  kernels::sparse_categorical_crossentropy(stream_.get(), rows, classes, probs, labels, scale, from_softmax_logits,
                                           dinput, stats);
}

void CudaBackend::accumulate_stats(const float* step_stats, float* totals, int64_t step) {
  activate();
  kernels::accumulate_stats(stream_.get(), step_stats, totals, step);
}

// ---- optimizers ----

void CudaBackend::adam_update(size_t count, const AdamStep& step, const float* stats, float* params,
                              const float* grads, float* m, float* v) {
  activate();
  kernels::adam_update(stream_.get(), count, step, stats, params, grads, m, v);
}

void CudaBackend::sgd_update(size_t count, const SgdStep& step, const float* stats, float* params,
                             const float* grads, float* momentum) {
  activate();
  kernels::sgd_update(stream_.get(), count, step, stats, params, grads, momentum);
}

}  // namespace mirror::cuda
