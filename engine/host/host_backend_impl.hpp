// HostBackend's declaration, shared privately by engine/host/*.cpp: the op table on the CPU, its
// cache of oneDNN convolution primitives, and the oneDNN status checks. Nothing outside
// engine/host includes this header (layers never see oneDNN).
#pragma once

#include <oneapi/dnnl/dnnl.hpp>
#include <oneapi/dnnl/dnnl_debug.h>

#include <memory>
#include <utility>
#include <vector>

#include "engine/backend.hpp"
#include "engine/error.hpp"

// Checks a oneDNN C status (dnnl_status_t or dnnl::status) at the call and throws DeviceError
// naming the call, file:line and oneDNN's own text for the status.
#define MIRROR_DNNL_CHECK(call)                                                                   \
  do {                                                                                            \
    const auto mirror_dnnl_status_ = static_cast<dnnl_status_t>(call);                            \
    if (mirror_dnnl_status_ != dnnl_success)                                                      \
      throw ::mirror::DeviceError(::mirror::str("oneDNN call `", #call, "` failed at ", __FILE__, \
                                                ":", __LINE__, ": ",                              \
                                                dnnl_status2str(mirror_dnnl_status_)));           \
  } while (0)

// Runs a statement of oneDNN's C++ API (which throws dnnl::error) and turns a failure into a
// DeviceError naming the statement, file:line, oneDNN's status and its message.
#define MIRROR_DNNL_TRY(statement)                                                                  \
  do {                                                                                              \
    try {                                                                                           \
      statement;                                                                                    \
    } catch (const dnnl::error& mirror_dnnl_error_) {                                               \
      throw ::mirror::DeviceError(::mirror::str("oneDNN call `", #statement, "` failed at ",        \
                                                __FILE__, ":", __LINE__, ": ",                      \
                                                dnnl_status2str(mirror_dnnl_error_.status), " (",   \
                                                mirror_dnnl_error_.what(), ")"));                   \
    }                                                                                               \
  } while (0)

namespace mirror::host {

// A weight layout oneDNN prefers over HWIO: memory in its layout and the reorder between the
// two (args empty when the primitive takes the caller's HWIO weights directly).
struct WeightLayout {
  dnnl::memory internal;
  dnnl::reorder reorder;
  std::vector<dnnl_exec_arg_t> args;
};

// One convolution geometry's oneDNN objects, created once and executed many times. x, w, b, y
// describe the caller's tensors (NHWC activations, HWIO weights) and get no buffer of their own:
// each call points them at its arguments (x is dx and y is dy in the backward passes). Execution
// arguments are built once; scratchpads are user-managed, so this object owns all the memory its
// primitives use and two backends never share one.
struct ConvForward {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward primitive;
  WeightLayout weights;
  dnnl::memory scratch;
  std::vector<dnnl_exec_arg_t> args;
};

struct ConvPrimitives {
  dnnl::memory x, w, b, y;

  ConvForward forward;
  ConvForward forward_relu;  // with ReLU as a oneDNN post-op: one pass instead of two

  dnnl::convolution_backward_weights::primitive_desc backward_weights_pd;
  dnnl::convolution_backward_weights backward_weights;
  WeightLayout backward_diff_weights;
  dnnl::memory backward_weights_scratch;
  std::vector<dnnl_exec_arg_t> backward_weights_args;

  dnnl::convolution_backward_data::primitive_desc backward_data_pd;
  dnnl::convolution_backward_data backward_data;
  WeightLayout backward_data_weights;
  dnnl::memory backward_data_scratch;
  std::vector<dnnl_exec_arg_t> backward_data_args;
};

class HostBackend final : public Backend {
 public:
  explicit HostBackend(int threads);
  ~HostBackend() override;

  const Device& device() const override { return device_; }
  void bind_current_thread() override;

  DeviceBuffer allocate(size_t num_bytes) override;
  void upload(const void* host_src, void* dst, size_t num_bytes) override;
  void download(const void* src, void* host_dst, size_t num_bytes) override;
  void copy(const float* src, float* dst, size_t count) override;
  void fill(float* dst, size_t count, float value) override;
  void synchronize() override {}

  std::unique_ptr<ResidentImages> make_resident(const ImageSet& images) override;
  void gather_batch(const ResidentImages& images, std::span<const int32_t> indices, float* x,
                    int32_t* labels) override;

  void conv2d_forward(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y) override;
  void conv2d_relu_forward(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y) override;
  void conv2d_backward_weights(const ConvGeometry& g, const float* x, const float* dy, float* dw,
                               float* db) override;
  void conv2d_backward_data(const ConvGeometry& g, const float* w, const float* dy, float* dx) override;

  void max_pool_forward(const PoolGeometry& g, const float* x, float* y) override;
  void max_pool_backward(const PoolGeometry& g, const float* x, const float* y, const float* dy,
                         float* dx) override;
  void max_pool_relu_backward(const PoolGeometry& g, const float* x, const float* y, const float* dy,
                              float* dx) override;

  void dense_forward(int64_t rows, int64_t in, int64_t out, const float* x, const float* w, const float* b,
                     float* y) override;
  void dense_backward(int64_t rows, int64_t in, int64_t out, const float* x, const float* w, const float* dy,
                      float* dx, float* dw, float* db) override;

  void activation_forward(Activation act, int64_t rows, int64_t cols, float* y) override;
  void activation_backward(Activation act, int64_t rows, int64_t cols, const float* y, float* dy) override;

  void sparse_categorical_crossentropy(int64_t rows, int64_t classes, const float* probs, const int32_t* labels,
                                       float scale, bool from_softmax_logits, float* dinput,
                                       float* stats) override;

  void accumulate_stats(const float* step_stats, float* totals, int64_t step) override;
  void adam_update(size_t count, const AdamStep& step, const float* stats, float* params, const float* grads,
                   float* m, float* v) override;
  void sgd_update(size_t count, const SgdStep& step, const float* stats, float* params, const float* grads,
                  float* momentum) override;

 private:
  // The cached primitives for `g`, created on first use (host_convolution.cpp).
  ConvPrimitives& conv_primitives(const ConvGeometry& g);
  // Max-pool backward for non-overlapping windows, optionally masked by ReLU's derivative.
  void unpool(const PoolGeometry& g, const float* x, const float* dy, float* dx, bool relu_input);
  void run_conv_forward(const ConvGeometry& g, bool relu, const float* x, const float* w, const float* b, float* y);

  Device device_;
  int threads_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  // A handful of geometries per model, so a linear search beats hashing.
  std::vector<std::pair<ConvGeometry, std::unique_ptr<ConvPrimitives>>> conv_cache_;
};

}  // namespace mirror::host
