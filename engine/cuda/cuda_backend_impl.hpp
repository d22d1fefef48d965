// CudaBackend: the Backend op table on one GPU (private to engine/cuda; others use
// cuda_backend.hpp). Every op is queued on stream_; members are declared so that the stream
// outlives everything that may still have work on it.
#pragma once

#include <array>

#include "mirror/engine/cuda/cuda_backend.hpp"
#include "mirror/engine/cuda/cuda_handles.hpp"
#include "mirror/engine/cuda/cudnn_convolution.hpp"

namespace mirror::cuda {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const Device& device);
  ~CudaBackend() override;

  const Device& device() const override { return device_; }
  void bind_current_thread() override;
  cudaStream_t stream() const { return stream_.get(); }
  // Trace spans on stream_ (cuda_device_clock.cpp).
  std::unique_ptr<DeviceClock> make_device_clock() override;

  void upload(const void* host_src, void* dst, size_t num_bytes) override;
  void download(const void* src, void* host_dst, size_t num_bytes) override;
  void copy(const float* src, float* dst, size_t count) override;
  void fill(float* dst, size_t count, float value) override;
  void synchronize() override;
  // Backs Backend::allocate(), which counts the calls.
  DeviceBuffer allocate_memory(size_t num_bytes) override;

  std::unique_ptr<ResidentImages> make_resident(const ImageSet& images) override;
  void gather_batch(const ResidentImages& images, std::span<const int32_t> indices, float* x,
                    int32_t* labels) override;

  void conv2d_forward(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y) override;
  void conv2d_relu_forward(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y) override;
  void conv2d_backward_weights(const ConvGeometry& g, const float* x, const float* dy, float* dw, float* db) override;
  void conv2d_backward_data(const ConvGeometry& g, const float* w, const float* dy, float* dx) override;
  void max_pool_forward(const PoolGeometry& g, const float* x, float* y) override;
  void max_pool_backward(const PoolGeometry& g, const float* x, const float* y, const float* dy, float* dx) override;
  void max_pool_relu_backward(const PoolGeometry& g, const float* x, const float* y, const float* dy,
                              float* dx) override;
  void avg_pool_forward(const PoolGeometry& g, const float* x, float* y) override;
  void avg_pool_backward(const PoolGeometry& g, const float* dy, float* dx) override;
  void global_avg_pool_forward(int64_t batch, int64_t pixels, int64_t channels, const float* x, float* y) override;
  void global_avg_pool_backward(int64_t batch, int64_t pixels, int64_t channels, const float* dy, float* dx) override;
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
  void copy_columns(int64_t rows, int64_t cols, const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
                    bool accumulate) override;

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
  // Makes this backend's GPU current on the calling thread (cheap when it already is).
  void activate() const;
  // db[c] = sum over rows of dy[r, c], through cuBLAS against a vector of ones. dy: (rows, cols)
  void column_sums(int64_t rows, int64_t cols, const float* dy, float* db);
  // Scratch for batch normalization's partial sums, grown to the largest shape seen.
  double* batch_norm_partials(int64_t rows, int64_t channels);

  Device device_;
  DeviceMemoryPool& pool_;
  Stream stream_;
  CudnnHandle cudnn_;
  CublasHandle cublas_;
  std::unique_ptr<CudnnConvolutions> convolutions_;
  DeviceBuffer ones_;            // ones for column sums; grows to the most rows seen
  DeviceBuffer partials_;        // batch normalization's per-chunk sums
  // gather_batch: indices go host -> pinned staging -> device; two staging slots, each reused
  // only after the copy out of it (marked by its event) has run.
  std::array<PinnedBuffer, 2> staging_;
  std::array<Event, 2> staging_copied_;
  int next_staging_ = 0;
  DeviceBuffer device_indices_;
};

}  // namespace mirror::cuda
