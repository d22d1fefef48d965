// HostBackend's declaration, shared privately by engine/host/*.cpp: the op table on the CPU, its
// cache of oneDNN convolution primitives, and the oneDNN status checks. Nothing outside
// engine/host includes this header (layers never see oneDNN).
#pragma once

#include <oneapi/dnnl/dnnl.hpp>
#include <oneapi/dnnl/dnnl_debug.h>

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "mirror/engine/backend.hpp"
#include "mirror/engine/error.hpp"
#include "mirror/engine/host/cpu_isa.hpp"

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

// Below this many elements a parallel region costs more than it saves.
inline constexpr int64_t kParallelMinCount = int64_t{1} << 15;

// Runs fn(chunk_begin, chunk_end) over [begin, end): one chunk per thread in a parallel region, or
// one chunk when the range is below kParallelMinCount. The shape a hot_loop (cpu_isa.hpp) needs,
// since its loop must sit outside the region.
template <typename Fn>
void for_chunks(int threads, int64_t begin, int64_t end, const Fn& fn) {
  const int64_t chunks = end - begin >= kParallelMinCount ? threads : 1;
  const int64_t chunk = (end - begin + chunks - 1) / chunks;
#pragma omp parallel for num_threads(threads) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) fn(begin + c * chunk, std::min(end, begin + (c + 1) * chunk));
}

// Runs a primitive through the C API with argument arrays built once, so a call allocates nothing.
inline void execute(const dnnl::primitive& p, const dnnl::stream& stream, const std::vector<dnnl_exec_arg_t>& args) {
  MIRROR_DNNL_CHECK(dnnl_primitive_execute(p.get(), stream.get(), static_cast<int>(args.size()), args.data()));
}

// Points a cached memory object at a caller's buffer.
inline void set_handle(const dnnl::memory& m, const void* data) {
  MIRROR_DNNL_CHECK(dnnl_memory_set_data_handle_v2(m.get(), const_cast<void*>(data), nullptr));
}

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
  bool has_bias = true;  // false: use_bias=False, b is unused and every primitive is made without one
  dnnl::memory x, w, b, y;

  ConvForward forward;

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

// oneDNN's element-wise primitive for one activation, direction and element count, created once:
// its JIT code evaluates exp, erf and tanh in vector registers, where libm's calls run one
// element at a time. src / dst / diff_dst / diff_src get no buffer of their own; each call points
// them at its arguments.
struct EltwisePrimitive {
  Activation activation = Activation::Linear;
  bool backward = false;
  int64_t count = 0;
  dnnl::memory src, dst, diff_dst, diff_src, scratch;
  dnnl::primitive primitive;
  std::vector<dnnl_exec_arg_t> args;
};

class HostBackend final : public Backend {
 public:
  explicit HostBackend(int threads);
  ~HostBackend() override;

  const Device& device() const override { return device_; }
  void bind_current_thread() override;

  void upload(const void* host_src, void* dst, size_t num_bytes) override;
  void download(const void* src, void* host_dst, size_t num_bytes) override;
  void copy(const float* src, float* dst, size_t count) override;
  void fill(float* dst, size_t count, float value) override;
  void synchronize() override {}
  // Backs Backend::allocate(), which counts the calls.
  DeviceBuffer allocate_memory(size_t num_bytes) override;

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
  // Convolution with the 2x2 max pooling after it (host_conv_pool.cpp).
  bool fuses_conv2d_max_pool(const ConvGeometry& conv, const PoolGeometry& pool) const override;
  void conv2d_max_pool_forward(const ConvGeometry& conv, const PoolGeometry& pool, bool relu, const float* x,
                               const float* w, const float* b, float* y, uint8_t* argmax) override;
  void conv2d_max_pool_backward(const ConvGeometry& conv, const PoolGeometry& pool, const float* x, const float* w,
                                const float* dy, const uint8_t* argmax, float* dw, float* db, float* dx) override;
  void avg_pool_forward(const PoolGeometry& g, const float* x, float* y) override;
  void avg_pool_backward(const PoolGeometry& g, const float* dy, float* dx) override;
  void global_avg_pool_forward(int64_t batch, int64_t pixels, int64_t channels, const float* x, float* y) override;
  void global_avg_pool_backward(int64_t batch, int64_t pixels, int64_t channels, const float* dy,
                                float* dx) override;

  void dense_forward(int64_t rows, int64_t in, int64_t out, const float* x, const float* w, const float* b,
                     float* y) override;
  void dense_backward(int64_t rows, int64_t in, int64_t out, const float* x, const float* w, const float* dy,
                      float* dx, float* dw, float* db) override;

  void activation_forward(Activation act, int64_t rows, int64_t cols, const float* x, float* y) override;
  void activation_backward(Activation act, int64_t rows, int64_t cols, const float* x, const float* y,
                           const float* dy, float* dx) override;

  void batch_norm_sums(int64_t rows, int64_t channels, const float* x, const float* shift, float* sums) override;
  void batch_norm_moments(int64_t channels, double count, float epsilon, const float* shift, const float* sums,
                          float* mean, float* var, float* invstd) override;
  void batch_norm_invstd(int64_t channels, float epsilon, const float* var, float* invstd) override;
  void batch_norm_forward(int64_t rows, int64_t channels, const float* x, const float* mean, const float* invstd,
                          const float* gamma, const float* beta, float* y) override;
  void batch_norm_backward_sums(int64_t rows, int64_t channels, const float* x, const float* dy, const float* mean,
                                const float* invstd, float* sums) override;
  void batch_norm_backward_data(int64_t rows, int64_t channels, const float* x, const float* dy, const float* mean,
                                const float* invstd, const float* gamma, const float* sums, double count,
                                float* dx) override;
  void batch_norm_update_moving(int64_t channels, float momentum, const float* mean, const float* var,
                                const float* guard, float* moving_mean, float* moving_var) override;

  void dropout_forward(const DropoutSpec& spec, int64_t rows, int64_t cols, const float* x, float* y) override;
  void dropout_backward(const DropoutSpec& spec, int64_t rows, int64_t cols, const float* dy, float* dx) override;

  void add(size_t count, const float* a, const float* b, float* y) override;
  void copy_columns(int64_t rows, int64_t cols, const float* src, int64_t src_stride, float* dst,
                    int64_t dst_stride, bool accumulate) override;

  void loss(const LossSpec& spec, int64_t rows, int64_t cols, const float* outputs, const int32_t* labels,
            float scale, float* dinput, float* stats) override;
  void metric(const MetricSpec& spec, int64_t rows, int64_t cols, const float* outputs, const int32_t* labels,
              float* stats) override;

  void accumulate_stats(size_t count, const float* step_stats, float* totals, int64_t step) override;
  void optimizer_update(size_t count, const OptimizerStep& step, const ParameterSegments& segments, const float* guard,
                        float* params, const float* grads, float* slots) override;
  void clip_scales(const ParameterSegments& segments, const float* grads, float clip_norm, bool global,
                   float* scales) override;

 private:
  // The cached primitives for `g` with or without a bias, created on first use (host_convolution.cpp).
  ConvPrimitives& conv_primitives(const ConvGeometry& g, bool has_bias);
  float* pointwise_scratch(size_t count);
  // x itself, or for a strided 1x1 convolution its subsampled copy (see host_convolution.cpp).
  const float* pointwise_input(const ConvGeometry& g, const float* x);
  // Max-pool backward for non-overlapping windows, optionally masked by ReLU's derivative.
  void unpool(const PoolGeometry& g, const float* x, const float* dy, float* dx, bool relu_input);
  void check_conv_pool(const ConvGeometry& conv, const PoolGeometry& pool) const;
  // `chunks` blocks of `per_chunk` floats for the fused convolution's threads; grows, then is reused.
  float* conv_pool_scratch(int64_t chunks, size_t per_chunk);
  // The cached oneDNN eltwise primitive for `act` over `count` elements (host_activations.cpp).
  EltwisePrimitive& eltwise_primitive(Activation act, bool backward, int64_t count);
  // Two per-channel sums over rows in a fixed order, whatever the thread count (host_batch_norm.cpp).
  template <class Term>
  void channel_sums(int64_t rows, int64_t channels, float* sums, const Term& term);

  Device device_;
  int threads_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  // A handful of geometries per model, so a linear search beats hashing. Keyed by the geometry
  // (padding included) and ConvPrimitives::has_bias.
  std::vector<std::pair<ConvGeometry, std::unique_ptr<ConvPrimitives>>> conv_cache_;
  // The subsampled input (or gradient) of a strided 1x1 convolution; grows, then is reused.
  std::vector<float> pointwise_scratch_;
  // The fused convolution's per-thread padded images and partial gradient sums, and the
  // convolution output's gradient when an input gradient is asked for (host_conv_pool.cpp).
  std::vector<float> conv_pool_scratch_, conv_pool_gradient_;
  // Keyed by activation, direction and element count: a few per layer and batch size.
  std::vector<std::unique_ptr<EltwisePrimitive>> eltwise_cache_;
  // Per-block partial sums of the batch-normalization reductions, sized by the largest batch seen.
  std::vector<double> reduce_scratch_;
  // Per-variable sums of squares for clip_scales, sized by the most variables seen.
  std::vector<double> clip_sums_;
};

}  // namespace mirror::host
