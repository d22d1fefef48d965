// Backend: the op table a replica runs its layers with. One instance per replica, used only from
// that replica's worker thread. Implementations: engine/host (oneDNN + C++), engine/cuda (cuDNN,
// cuBLAS, CUDA kernels).
//
// Ordering contract: every op is issued on the backend's own stream and ordered after the ops
// issued before it on the same backend. Pointers are device pointers of this backend unless a
// parameter says "host". An op returns once its work is queued (host: once it is done); call
// synchronize() or download() to wait. `rows` may be 0; then an op does nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "engine/activation.hpp"
#include "engine/buffer.hpp"
#include "engine/device.hpp"
#include "engine/geometry.hpp"

namespace mirror {

struct ImageSet;

// A data set's images and labels placed where this backend gathers batches from them
// (the host arrays themselves on the CPU; a uint8 copy in device memory on a GPU).
class ResidentImages {
 public:
  virtual ~ResidentImages() = default;
};

// Hyper-parameters of one Adam step (Keras 3's rule; `alpha` already holds the bias correction:
// lr * sqrt(1 - beta2^t) / (1 - beta1^t)).
struct AdamStep {
  float alpha = 0, beta1 = 0.9f, beta2 = 0.999f, epsilon = 1e-7f;
};

struct SgdStep {
  float learning_rate = 0.01f, momentum = 0.0f;
};

// Where the loss op accumulates: stats[0] += sum of per-sample losses, stats[1] += correct count.
inline constexpr int kStatCount = 2;
// An epoch's running totals on the device: {loss sum, correct count, first step whose loss was not
// finite (-1 while there is none)}. See accumulate_stats().
inline constexpr int kTotalCount = 3;

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const Device& device() const = 0;
  // Called once on the replica's worker thread before any op (binds the CUDA device, sets the
  // thread count of the host's parallel regions).
  virtual void bind_current_thread() {}

  // ---- memory ----
  virtual DeviceBuffer allocate(size_t num_bytes) = 0;
  virtual void upload(const void* host_src, void* dst, size_t num_bytes) = 0;
  // Waits for queued work, then copies to host memory.
  virtual void download(const void* src, void* host_dst, size_t num_bytes) = 0;
  virtual void copy(const float* src, float* dst, size_t count) = 0;
  virtual void fill(float* dst, size_t count, float value) = 0;
  virtual void synchronize() = 0;

  // ---- input ----
  virtual std::unique_ptr<ResidentImages> make_resident(const ImageSet& images) = 0;
  // x[i, :] = images[indices[i]] / 255 (NHWC float), labels[i] = label of indices[i].
  // `indices` is host memory and may be reused once the call returns.
  virtual void gather_batch(const ResidentImages& images, std::span<const int32_t> indices, float* x,
                            int32_t* labels) = 0;

  // ---- layers ----
  // y = conv(x, w) + b. x: (batch, in_h, in_w, in_c), w: HWIO, b: (out_c), y: (batch, out_h, out_w, out_c).
  virtual void conv2d_forward(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y) = 0;
  // dw = dL/dw, db = dL/db (overwritten, not accumulated).
  virtual void conv2d_backward_weights(const ConvGeometry& g, const float* x, const float* dy, float* dw,
                                       float* db) = 0;
  // dx = dL/dx (overwritten).
  virtual void conv2d_backward_data(const ConvGeometry& g, const float* w, const float* dy, float* dx) = 0;

  virtual void max_pool_forward(const PoolGeometry& g, const float* x, float* y) = 0;
  // dx (overwritten) gets each dy at the first maximum of its window, zero elsewhere.
  virtual void max_pool_backward(const PoolGeometry& g, const float* x, const float* y, const float* dy,
                                 float* dx) = 0;

  // y = x w + b. x: (rows, in), w: (in, out) (Keras's kernel layout), b: (out), y: (rows, out).
  virtual void dense_forward(int64_t rows, int64_t in, int64_t out, const float* x, const float* w,
                             const float* b, float* y) = 0;
  // dw, db overwritten; dx overwritten unless null.
  virtual void dense_backward(int64_t rows, int64_t in, int64_t out, const float* x, const float* w,
                              const float* dy, float* dx, float* dw, float* db) = 0;

  // y = act(y) in place, row-wise for softmax. y: (rows, cols).
  virtual void activation_forward(Activation act, int64_t rows, int64_t cols, float* y) = 0;
  // dy = dL/d(pre-activation) in place, from the activation's output y.
  virtual void activation_backward(Activation act, int64_t rows, int64_t cols, const float* y, float* dy) = 0;

  // Sparse categorical cross-entropy on probabilities (Keras: probabilities clipped to
  // [1e-7, 1 - 1e-7]). Accumulates into stats (see kStatCount). When `dinput` is not null it
  // receives scale * dLoss/d(input); with `from_softmax_logits` the input gradient is taken through
  // the softmax that produced `probs`, i.e. scale * (probs - onehot) with respect to the logits.
  virtual void sparse_categorical_crossentropy(int64_t rows, int64_t classes, const float* probs,
                                               const int32_t* labels, float scale, bool from_softmax_logits,
                                               float* dinput, float* stats) = 0;

  // totals += step_stats (see kTotalCount). The first time step_stats[0] is not finite, totals[0]
  // takes that value and totals[2] = step; totals then stay as they are, so an optimizer given
  // `totals` as its stats skips every later step too. Lets the host read the totals only now and
  // then instead of waiting for every step.
  virtual void accumulate_stats(const float* step_stats, float* totals, int64_t step) = 0;

  // ---- fused ops: each has an unfused default, overridden where a backend does better ----
  // y = relu(conv(x, w) + b).
  virtual void conv2d_relu_forward(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y) {
    conv2d_forward(g, x, w, b, y);
    activation_forward(Activation::ReLU, g.batch * g.out_h() * g.out_w(), g.out_c, y);
  }
  // max_pool_backward for an input x that is a ReLU's output, times ReLU's derivative there:
  // dx = (x > 0) * unpool(dy), so the layer that made x need not run its activation backward.
  virtual void max_pool_relu_backward(const PoolGeometry& g, const float* x, const float* y, const float* dy,
                                      float* dx) {
    max_pool_backward(g, x, y, dy, dx);
    activation_backward(Activation::ReLU, g.batch * g.in_h * g.in_w, g.channels, x, dx);
  }

  // ---- optimizers: one pass over a flat parameter buffer ----
  // Skipped entirely (parameters and slots unchanged) when stats[0] is not finite, so a NaN loss
  // never reaches the weights.
  virtual void adam_update(size_t count, const AdamStep& step, const float* stats, float* params,
                           const float* grads, float* m, float* v) = 0;
  virtual void sgd_update(size_t count, const SgdStep& step, const float* stats, float* params,
                          const float* grads, float* momentum) = 0;
};

}  // namespace mirror
