// Backend: the op table a replica runs its layers with. One instance per replica, used only from
// that replica's worker thread. Implementations: engine/host (oneDNN + C++), engine/cuda (cuDNN,
// cuBLAS, CUDA kernels).
//
// Ordering contract: every op is issued on the backend's own stream and ordered after the ops
// issued before it on the same backend. Pointers are device pointers of this backend unless a
// parameter says "host". An op returns once its work is queued (host: once it is done); call
// synchronize() or download() to wait. `rows` may be 0; then an op does nothing.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "mirror/engine/activation.hpp"
#include "mirror/engine/buffer.hpp"
#include "mirror/engine/device.hpp"
#include "mirror/engine/error.hpp"
#include "mirror/engine/geometry.hpp"
#include "mirror/engine/trace.hpp"

namespace mirror {

struct ImageSet;

// A data set's images and labels placed where this backend gathers batches from them
// (the host arrays themselves on the CPU; a uint8 copy in device memory on a GPU).
class ResidentImages {
 public:
  virtual ~ResidentImages() = default;
};

// One optimizer step's rule and constants (Keras 3's update rules, see engine/elementwise.hpp).
// Per element, in Keras's order: the gradient is scaled (clipping by norm) and clipped by value,
// the decoupled weight decay p -= lr wd p is applied, then the rule.
enum class OptimizerRule { SGD, Adam, RMSprop };

struct OptimizerStep {
  OptimizerRule rule = OptimizerRule::Adam;
  float learning_rate = 0.001f;  // this iteration's rate
  float alpha = 0;               // Adam: learning_rate * sqrt(1 - beta2^t) / (1 - beta1^t), t = iteration + 1
  float beta1 = 0.9f, beta2 = 0.999f;  // Adam's moment decays; RMSprop's rho is beta2
  float epsilon = 1e-7f;
  float momentum = 0;            // SGD and RMSprop; 0 = no momentum slot
  bool nesterov = false;         // SGD
  bool amsgrad = false;          // Adam
  bool centered = false;         // RMSprop
  float weight_decay = 0;        // decoupled decay per unit of learning rate; 0 = none
  float clipvalue = 0;           // gradients clamped to [-clipvalue, clipvalue]; 0 = none
};

// Slots of `count` floats the rule keeps, in the order optimizer_update expects them:
// SGD: momentum (when momentum > 0). Adam: m, v, then v_hat with amsgrad. RMSprop: velocity, then
// momentum (when momentum > 0), then the average gradient (centered).
inline int optimizer_slot_count(const OptimizerStep& s) {
  switch (s.rule) {
    case OptimizerRule::SGD: return s.momentum > 0 ? 1 : 0;
    case OptimizerRule::Adam: return s.amsgrad ? 3 : 2;
    case OptimizerRule::RMSprop: return 1 + (s.momentum > 0 ? 1 : 0) + (s.centered ? 1 : 0);
  }
  return 0;
}

// The variables of a flat parameter buffer as the optimizer sees them: variable s covers elements
// [bounds[s], bounds[s + 1]) (padding included, whose gradient is zero), bounds[count] = the
// buffer's length. Device pointers, made once per replica. Every pointer may be null.
struct ParameterSegments {
  int64_t count = 0;
  const int64_t* bounds = nullptr;
  const float* grad_scales = nullptr;  // per variable: its gradient's factor (clipping by norm); null = 1
  const float* decay = nullptr;        // per variable: 1 decayed, 0 excluded from weight decay; null = all 1
};

// ---- losses and metrics (computed by one op each over a replica's outputs and integer labels) ----
//
// Targets come from the int32 labels: the label itself (sparse kinds), its one-hot row (categorical
// kinds, and binary / mean-squared-error with more than one output column), or its value as a float
// (binary / mean squared error with one output column).
enum class LossKind { SparseCategoricalCrossentropy, CategoricalCrossentropy, BinaryCrossentropy, MeanSquaredError };

struct LossSpec {
  LossKind kind = LossKind::SparseCategoricalCrossentropy;
  // The outputs are logits (Keras's from_logits=True); otherwise probabilities, clipped to
  // [1e-7, 1 - 1e-7] as Keras does.
  bool from_logits = false;
  float label_smoothing = 0.0f;  // categorical: t = t (1 - s) + s / classes; binary: t = t (1 - s) + s / 2
  // Fused path: the outputs are probabilities made by a softmax (categorical kinds) or a sigmoid
  // (binary) just before the loss, and `dinput` is wanted with respect to that activation's input,
  // i.e. scale * (p - t) (averaged over the columns for binary), so the activation's backward is
  // skipped. Only with from_logits = false.
  bool gradient_through_activation = false;
};

enum class MetricKind { SparseCategoricalAccuracy, CategoricalAccuracy, BinaryAccuracy, SparseTopKCategoricalAccuracy };

struct MetricSpec {
  MetricKind kind = MetricKind::SparseCategoricalAccuracy;
  int k = 5;               // top-k: the label counts when fewer than k classes score strictly higher
  float threshold = 0.5f;  // binary: an output above it predicts 1
};

// ---- dropout ----
// Inverted dropout (Keras's): y = x / (1 - rate) where an element is kept, 0 where it is dropped.
// Element (row, col) of a replica's share is kept when random::uniform(seed, stream,
// (first_row + row) * cols + col) >= rate, so the mask depends on the global row of the sample,
// never on how the batch was split. The caller derives `stream` from the step and the layer.
struct DropoutSpec {
  float rate = 0.5f;
  uint64_t seed = 0;
  uint64_t stream = 0;
  int64_t first_row = 0;  // global index, within the batch, of the share's first row
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const Device& device() const = 0;
  // Called once on the replica's worker thread before any op (binds the CUDA device, sets the
  // thread count of the host's parallel regions).
  virtual void bind_current_thread() {}
  // A clock on the queue this backend's ops run on, for traces in device time; null where ops run
  // as they are called (the host), whose spans the host's clock times.
  virtual std::unique_ptr<DeviceClock> make_device_clock() { return nullptr; }

  // ---- memory ----
  // A buffer of `num_bytes` on this device, released through this backend when the buffer dies.
  DeviceBuffer allocate(size_t num_bytes) {
    allocations_.fetch_add(1, std::memory_order_relaxed);
    return allocate_memory(num_bytes);
  }
  // allocate() calls so far: fit's steady state makes none (tests/test_allocations.cpp). Any thread.
  int64_t allocations() const { return allocations_.load(std::memory_order_relaxed); }
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

  // ---- convolution ----
  // y = conv(x, w) + b with g's strides and padding (zeros outside the input). x: (batch, in_h,
  // in_w, in_c), w: HWIO, b: (out_c) or null (use_bias=False), y: (batch, out_h, out_w, out_c).
  virtual void conv2d_forward(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y) = 0;
  // dw = dL/dw, db = dL/db (overwritten, not accumulated; db may be null).
  virtual void conv2d_backward_weights(const ConvGeometry& g, const float* x, const float* dy, float* dw,
                                       float* db) = 0;
  // dx = dL/dx (overwritten).
  virtual void conv2d_backward_data(const ConvGeometry& g, const float* w, const float* dy, float* dx) = 0;

  // ---- pooling ----
  virtual void max_pool_forward(const PoolGeometry& g, const float* x, float* y) = 0;
  // dx (overwritten) gets each dy at the first maximum of its window (row-major window order,
  // padded positions excluded), zero elsewhere.
  virtual void max_pool_backward(const PoolGeometry& g, const float* x, const float* y, const float* dy,
                                 float* dx) = 0;
  // y = mean over each window of the positions inside the input (padding is not counted, as in
  // Keras's "same" average pooling).
  virtual void avg_pool_forward(const PoolGeometry& g, const float* x, float* y) = 0;
  // dx (overwritten): each dy shared equally among the counted positions of its window.
  virtual void avg_pool_backward(const PoolGeometry& g, const float* dy, float* dx) = 0;
  // y[n, c] = mean over the `pixels` positions of x[n, :, c]. x: (batch, pixels, channels), y: (batch, channels)
  virtual void global_avg_pool_forward(int64_t batch, int64_t pixels, int64_t channels, const float* x, float* y) = 0;
  // dx[n, p, c] = dy[n, c] / pixels (overwritten).
  virtual void global_avg_pool_backward(int64_t batch, int64_t pixels, int64_t channels, const float* dy,
                                        float* dx) = 0;

  // ---- dense ----
  // y = x w + b. x: (rows, in), w: (in, out) (Keras's kernel layout), b: (out) or null, y: (rows, out).
  virtual void dense_forward(int64_t rows, int64_t in, int64_t out, const float* x, const float* w,
                             const float* b, float* y) = 0;
  // dw overwritten; db overwritten unless null; dx overwritten unless null.
  virtual void dense_backward(int64_t rows, int64_t in, int64_t out, const float* x, const float* w,
                              const float* dy, float* dx, float* dw, float* db) = 0;

  // ---- activations ----
  // y = act(x), row-wise for softmax. x, y: (rows, cols); y may be x (in place).
  virtual void activation_forward(Activation act, int64_t rows, int64_t cols, const float* x, float* y) = 0;
  // dx = dL/dx from dy = dL/dy. Needs the input x when backward_needs_input(act) (else x may be
  // null) and the output y otherwise (else y may be null); dx may be dy (in place).
  virtual void activation_backward(Activation act, int64_t rows, int64_t cols, const float* x, const float* y,
                                   const float* dy, float* dx) = 0;

  // ---- batch normalization over the last axis: x is (rows, channels), rows = batch * H * W ----
  // Training computes the batch's moments from sums that a strategy can all-reduce across replicas
  // (synchronized batch normalization). The sums are shifted by a per-channel value that is the
  // same on every replica (the moving mean), so the variance does not suffer from cancellation.
  //
  // sums[c] = sum_r (x[r, c] - shift[c]), sums[channels + c] = sum_r (x[r, c] - shift[c])^2.
  virtual void batch_norm_sums(int64_t rows, int64_t channels, const float* x, const float* shift, float* sums) = 0;
  // From sums over `count` rows (count > 0): mean = shift + s1 / count, the biased variance
  // var = max(s2 / count - (s1 / count)^2, 0) (Keras's), invstd = 1 / sqrt(var + epsilon).
  // All arrays are (channels).
  virtual void batch_norm_moments(int64_t channels, double count, float epsilon, const float* shift,
                                  const float* sums, float* mean, float* var, float* invstd) = 0;
  // invstd = 1 / sqrt(var + epsilon): inference with the moving variance.
  virtual void batch_norm_invstd(int64_t channels, float epsilon, const float* var, float* invstd) = 0;
  // y = gamma (x - mean) invstd + beta; gamma or beta may be null (scale=False / center=False).
  virtual void batch_norm_forward(int64_t rows, int64_t channels, const float* x, const float* mean,
                                  const float* invstd, const float* gamma, const float* beta, float* y) = 0;
  // sums[c] = sum_r dy[r, c] (= dL/dbeta), sums[channels + c] = sum_r dy[r, c] xhat[r, c] (= dL/dgamma)
  // with xhat = (x - mean) invstd. Overwritten.
  virtual void batch_norm_backward_sums(int64_t rows, int64_t channels, const float* x, const float* dy,
                                        const float* mean, const float* invstd, float* sums) = 0;
  // dx = gamma invstd (dy - sums[c] / count - xhat sums[channels + c] / count), the gradient through
  // the batch's own mean and variance; `sums` and `count` cover every row the moments were taken
  // over (all replicas' when synchronized). gamma may be null (= 1). dx overwritten.
  virtual void batch_norm_backward_data(int64_t rows, int64_t channels, const float* x, const float* dy,
                                        const float* mean, const float* invstd, const float* gamma,
                                        const float* sums, double count, float* dx) = 0;
  // Keras's update of the moving statistics: moving = moving * momentum + batch * (1 - momentum),
  // for the mean and for the (biased) variance. Skipped when guard[0] is not finite, like the
  // optimizers, so a NaN step changes no variable.
  virtual void batch_norm_update_moving(int64_t channels, float momentum, const float* mean, const float* var,
                                        const float* guard, float* moving_mean, float* moving_var) = 0;

  // ---- dropout (see DropoutSpec) ----
  virtual void dropout_forward(const DropoutSpec& spec, int64_t rows, int64_t cols, const float* x, float* y) = 0;
  // dx = dy * mask / (1 - rate), the mask drawn again from the same counters. dx may be dy.
  virtual void dropout_backward(const DropoutSpec& spec, int64_t rows, int64_t cols, const float* dy, float* dx) = 0;

  // ---- tensors ----
  // y = a + b element-wise; y may be a or b.
  virtual void add(size_t count, const float* a, const float* b, float* y) = 0;
  // dst[r, 0:cols] = src[r, 0:cols] (or += with `accumulate`), rows `src_stride` and `dst_stride`
  // floats apart: concatenation along the last axis, and its gradient.
  virtual void copy_columns(int64_t rows, int64_t cols, const float* src, int64_t src_stride, float* dst,
                            int64_t dst_stride, bool accumulate) = 0;

  // ---- loss and metrics ----
  // stats[0] += the sum over rows of each sample's loss (Keras's per-sample loss: the mean over
  // the last axis for binary cross-entropy and mean squared error). When `dinput` is not null it
  // receives scale * d(sum of losses)/d(outputs), or with respect to the activation's input when
  // spec.gradient_through_activation. labels: (rows) int32. Host: throws DataError for a label
  // outside what the loss accepts; GPU: the loss becomes NaN (labels are checked when data is loaded).
  virtual void loss(const LossSpec& spec, int64_t rows, int64_t cols, const float* outputs, const int32_t* labels,
                    float scale, float* dinput, float* stats) = 0;
  // stats[0] += the sum over rows of the metric's per-sample value (1 or 0 for accuracies; the
  // share of correct columns for binary accuracy with several columns).
  virtual void metric(const MetricSpec& spec, int64_t rows, int64_t cols, const float* outputs,
                      const int32_t* labels, float* stats) = 0;

  // totals[0, count) += step_stats[0, count) (one step's loss and metric sums); totals[count] holds
  // the first step whose loss (step_stats[0]) was not finite, -1 while there is none. From that
  // step on totals[0] holds the bad loss and nothing changes any more, so an optimizer given
  // `totals` as its guard skips every later step too. Lets the host read the totals only now and
  // then instead of waiting for every step.
  virtual void accumulate_stats(size_t count, const float* step_stats, float* totals, int64_t step) = 0;

  // ---- fused ops: each has an unfused default, overridden where a backend does better ----
  // y = relu(conv(x, w) + b).
  virtual void conv2d_relu_forward(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y) {
    conv2d_forward(g, x, w, b, y);
    activation_forward(Activation::ReLU, g.batch * g.out_h() * g.out_w(), g.out_c, y, y);
  }
  // max_pool_backward for an input x that is a ReLU's output, times ReLU's derivative there:
  // dx = (x > 0) * unpool(dy), so the layer that made x need not run its activation backward.
  virtual void max_pool_relu_backward(const PoolGeometry& g, const float* x, const float* y, const float* dy,
                                      float* dx) {
    max_pool_backward(g, x, y, dy, dx);
    activation_backward(Activation::ReLU, g.batch * g.in_h * g.in_w, g.channels, nullptr, x, dx, dx);
  }

  // A convolution (optionally with ReLU) and the max pooling after it as one op, where the
  // convolution's output is never stored: only the pooled output and, per pooled element, which
  // window position won (`argmax`, one byte each; kArgmaxNone where ReLU zeroed the window, so
  // no gradient flows). `pool` is the pooling's geometry over the convolution's output. Only for
  // geometries where fuses_conv2d_max_pool() is true; the default backend fuses none, and the
  // model then runs the two layers one by one.
  static constexpr uint8_t kArgmaxNone = 255;
  virtual bool fuses_conv2d_max_pool(const ConvGeometry& /*conv*/, const PoolGeometry& /*pool*/) const {
    return false;
  }
  // y = max_pool(act(conv(x, w) + b)), act ReLU or identity; b may be null. y and argmax:
  // (batch, pool.out_h(), pool.out_w(), channels).
  virtual void conv2d_max_pool_forward(const ConvGeometry& /*conv*/, const PoolGeometry& /*pool*/, bool /*relu*/,
                                       const float* /*x*/, const float* /*w*/, const float* /*b*/, float* /*y*/,
                                       uint8_t* /*argmax*/) {
    throw InvalidArgument("conv2d_max_pool_forward: this backend does not fuse convolution with max pooling");
  }
  // From the pooled gradient dy and forward's argmax: dw (overwritten), db (overwritten; may be
  // null) and, when dx is not null, dL/dx (overwritten).
  virtual void conv2d_max_pool_backward(const ConvGeometry& /*conv*/, const PoolGeometry& /*pool*/,
                                        const float* /*x*/, const float* /*w*/, const float* /*dy*/,
                                        const uint8_t* /*argmax*/, float* /*dw*/, float* /*db*/, float* /*dx*/) {
    throw InvalidArgument("conv2d_max_pool_backward: this backend does not fuse convolution with max pooling");
  }

  // ---- optimizers: one pass over a flat parameter buffer ----
  // Applies `step` to `count` parameters; `slots` holds optimizer_slot_count(step) consecutive
  // buffers of `count` floats. `segments` is needed (bounds set) only when it carries gradient
  // scales or decay factors. Skipped entirely (parameters and slots unchanged) when guard[0] is not
  // finite (the running loss total, see accumulate_stats), so a NaN loss never reaches the weights.
  virtual void optimizer_update(size_t count, const OptimizerStep& step, const ParameterSegments& segments,
                                const float* guard, float* params, const float* grads, float* slots) = 0;
  // Gradient factors for clipping by norm, Keras's clip_by_norm: scales[s] = clip / max(|g_s|, clip)
  // with |g_s| the L2 norm of variable s's gradient; with `global` (clip_by_global_norm) every
  // scales[s] = clip / max(|g|, clip), |g| the norm over all of `grads`. The sums of squares are
  // taken in a fixed order, so equal gradients on two replicas give bitwise equal factors.
  // segments.bounds must be set; `scales` holds segments.count floats, overwritten.
  virtual void clip_scales(const ParameterSegments& segments, const float* grads, float clip_norm, bool global,
                           float* scales) = 0;

 protected:
  virtual DeviceBuffer allocate_memory(size_t num_bytes) = 0;

 private:
  std::atomic<int64_t> allocations_{0};
};

}  // namespace mirror
