// The host's dense (fully connected) layer: oneDNN's row-major sgemm with Keras's (in, out) kernel,
// so the weights need no transposition to move between Keras and Mirror.
//
// A narrow layer (out <= kNarrowOut, a classifier's last layer) does its own threading: sgemm's
// splits the short sides of such a product, and with two threads it ran slower than with one
// (batch 32, 5408 x 10: 69 us against 43; milliseconds when the second core was busy and the idle
// thread had to be woken). A small product runs as one single-threaded sgemm; a larger one is split
// along `in`, one single-threaded sgemm per chunk and thread. dx's columns and dw's rows are
// disjoint per chunk, and y sums the chunks' partial products in chunk order, so each result is the
// same for a given thread count, run after run and on every replica.
#include <omp.h>

#include "mirror/engine/host/host_backend_impl.hpp"

namespace mirror::host {
namespace {

// Widest output split along `in`; wider layers keep sgemm's own threading.
constexpr int64_t kNarrowOut = 16;
// Below this many multiply-adds per call a parallel region costs more than the second thread saves
// (with OMP_WAIT_POLICY=PASSIVE waking a thread took tens of microseconds): the reference CNN's
// forward pass at batch 32 (1.7M) stays on sgemm, its backward pass (3.5M) is split.
constexpr int64_t kParallelMinMacs = int64_t{1} << 21;
// Chunk boundaries fall on multiples of this many inputs (a cache line of floats).
constexpr int64_t kChunkAlign = 16;

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

// How `in` is split between threads: `count` chunks of `width` inputs, the last one shorter; one
// chunk when the layer is wide or the product small.
struct InputChunks {
  int64_t count = 1, width = 0;
  int64_t begin(int64_t c) const { return c * width; }
  int64_t size(int64_t c, int64_t in) const { return std::min(in, (c + 1) * width) - c * width; }
};

// `products`: the sgemm calls per chunk (backward with dx: 2).
InputChunks split_inputs(int threads, int64_t rows, int64_t in, int64_t out, int64_t products) {
  if (threads < 2 || products * rows * in * out < kParallelMinMacs) return {1, in};
  const int64_t width = (in + threads - 1) / threads;
  const int64_t aligned = (width + kChunkAlign - 1) / kChunkAlign * kChunkAlign;
  return {(in + aligned - 1) / aligned, aligned};
}

// Sets the calling thread's OpenMP thread count, which oneDNN's sgemm takes for its own, to 1 for
// its lifetime.
class OneThread {
 public:
  OneThread() { omp_set_num_threads(1); }
  ~OneThread() { omp_set_num_threads(previous_); }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
  int previous_ = omp_get_max_threads();
};

// Runs fn(c) for every chunk, one per thread: sgemm called inside the region runs on the calling
// thread alone (oneDNN does not nest parallelism). A single chunk of a narrow layer runs on the
// calling thread too: sgemm's own threads cost more than they save on such a small product.
template <typename Fn>
void for_each_chunk(int threads, const InputChunks& chunks, const Fn& fn) {
  if (chunks.count == 1) {
    const OneThread guard;
    fn(0);
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(static, 1)
  for (int64_t c = 0; c < chunks.count; ++c) fn(c);
}

}  // namespace

void HostBackend::dense_forward(int64_t rows, int64_t in, int64_t out, const float* x, const float* w,
                                const float* b, float* y) {
  check_sizes(rows, in, out);
  if (rows == 0) return;
  if (out <= kNarrowOut) {
    // partial[c] = x[:, chunk c] w[chunk c, :]: (rows, out) each; y = b + their sum in chunk order.
    const InputChunks chunks = split_inputs(threads_, rows, in, out, 1);
    const size_t needed = static_cast<size_t>(chunks.count * rows * out);
    if (dense_scratch_.size() < needed) dense_scratch_.resize(needed);  // grows over the first steps only
    float* partials = dense_scratch_.data();
    for_each_chunk(threads_, chunks, [&](int64_t c) {
      const int64_t k0 = chunks.begin(c);
      MIRROR_DNNL_CHECK(dnnl::sgemm('N', 'N', rows, out, chunks.size(c, in), 1.0f, x + k0, in, w + k0 * out, out,
                                    0.0f, partials + c * rows * out, out));
    });
    for (int64_t i = 0; i < rows * out; ++i) {
      float sum = partials[i];
      for (int64_t c = 1; c < chunks.count; ++c) sum += partials[c * rows * out + i];
      y[i] = b ? b[i % out] + sum : sum;
    }
    return;
  }
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
  if (out <= kNarrowOut) {
    const InputChunks chunks = split_inputs(threads_, rows, in, out, dx ? 2 : 1);
    for_each_chunk(threads_, chunks, [&](int64_t c) {
      const int64_t k0 = chunks.begin(c), width = chunks.size(c, in);
      // dx[:, chunk] = dy w[chunk, :]^T: (rows, out) x (out, width).
      if (dx)
        MIRROR_DNNL_CHECK(dnnl::sgemm('N', 'T', rows, width, out, 1.0f, dy, out, w + k0 * out, out, 0.0f, dx + k0, in));
      // dw[chunk, :] = x[:, chunk]^T dy: (width, rows) x (rows, out).
      MIRROR_DNNL_CHECK(
          dnnl::sgemm('T', 'N', width, out, rows, 1.0f, x + k0, in, dy, out, 0.0f, dw + k0 * out, out));
    });
    if (db) column_sums(rows, out, dy, db);
    return;
  }
  // dx = dy w^T: (rows, out) x (out, in).
  if (dx) MIRROR_DNNL_CHECK(dnnl::sgemm('N', 'T', rows, in, out, 1.0f, dy, out, w, out, 0.0f, dx, in));
  // dw = x^T dy: (in, rows) x (rows, out).
  MIRROR_DNNL_CHECK(dnnl::sgemm('T', 'N', in, out, rows, 1.0f, x, in, dy, out, 0.0f, dw, out));
  if (db) column_sums(rows, out, dy, db);
}

}  // namespace mirror::host
