// The host's dense (fully connected) layer: oneDNN's row-major sgemm with Keras's (in, out) kernel,
// so the weights need no transposition to move between Keras and Mirror.
#include "mirror/engine/host/host_backend_impl.hpp"

namespace mirror::host {
namespace {

void check_sizes(int64_t rows, int64_t in, int64_t out) {
  MIRROR_REQUIRE(rows >= 0 && in > 0 && out > 0, InvalidArgument, "invalid dense layer sizes: ", rows,
                 " rows, ", in, " inputs, ", out, " outputs");
}

// db[j] = sum over rows of dy[r, j]. dy: (rows, out).
void column_sums(int64_t rows, int64_t out, const float* dy, float* db) {
  for (int64_t j = 0; j < out; ++j) db[j] = 0.0f;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = dy + r * out;
    for (int64_t j = 0; j < out; ++j) db[j] += row[j];
  }
}

}  // namespace

void HostBackend::dense_forward(int64_t rows, int64_t in, int64_t out, const float* x, const float* w,
                                const float* b, float* y) {
  check_sizes(rows, in, out);
  if (rows == 0) return;
  // y starts as the bias in every row, then the GEMM adds x w onto it (beta = 1); without a bias
  // the GEMM overwrites y (beta = 0).
  if (b) {
    for (int64_t r = 0; r < rows; ++r) {
      float* row = y + r * out;
      for (int64_t j = 0; j < out; ++j) row[j] = b[j];
    }
  }
  MIRROR_DNNL_CHECK(dnnl::sgemm('N', 'N', rows, out, in, 1.0f, x, in, w, out, b ? 1.0f : 0.0f, y, out));
}

void HostBackend::dense_backward(int64_t rows, int64_t in, int64_t out, const float* x, const float* w,
                                 const float* dy, float* dx, float* dw, float* db) {
  check_sizes(rows, in, out);
  if (rows == 0) return;
  // dx = dy w^T: (rows, out) x (out, in).
  if (dx) MIRROR_DNNL_CHECK(dnnl::sgemm('N', 'T', rows, in, out, 1.0f, dy, out, w, out, 0.0f, dx, in));
  // dw = x^T dy: (in, rows) x (rows, out).
  MIRROR_DNNL_CHECK(dnnl::sgemm('T', 'N', in, out, rows, 1.0f, x, in, dy, out, 0.0f, dw, out));
  if (db) column_sums(rows, out, dy, db);
}

}  // namespace mirror::host
