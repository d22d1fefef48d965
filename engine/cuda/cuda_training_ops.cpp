// CudaBackend, part 3: batch normalization (own kernels: see batch_norm_kernels.cu for why not
// cuDNN's), losses and metrics summed on the device, running statistics, and the fused optimizer
// steps. Each op only queues work on the backend's stream.
#include "mirror/engine/cuda/cuda_backend_impl.hpp"
#include "mirror/engine/cuda/kernels.hpp"

namespace mirror::cuda {

// ---- batch normalization ----

double* CudaBackend::batch_norm_partials(int64_t rows, int64_t channels) {
  const size_t num_bytes = kernels::batch_norm_partials_count(rows, channels) * sizeof(double);
  if (partials_.num_bytes() < num_bytes) partials_ = allocate(num_bytes);  // the old one returns in stream order
  return partials_.as<double>();
}

// With no rows (a replica's empty share) the sums are zeros, so an all-reduce of them still adds up.
void CudaBackend::batch_norm_sums(int64_t rows, int64_t channels, const float* x, const float* shift, float* sums) {
  MIRROR_REQUIRE(rows >= 0 && channels > 0, InvalidArgument, "invalid batch normalization sizes: ", rows,
                 " rows of ", channels, " channels");
  activate();
  kernels::batch_norm_sums(stream_.get(), rows, channels, x, shift, batch_norm_partials(rows, channels), sums);
}

void CudaBackend::batch_norm_moments(int64_t channels, double count, float epsilon, const float* shift,
                                     const float* sums, float* mean, float* var, float* invstd) {
  MIRROR_REQUIRE(count > 0, InvalidArgument, "batch normalization moments over ", count, " rows");
  activate();
  kernels::batch_norm_moments(stream_.get(), channels, count, epsilon, shift, sums, mean, var, invstd);
}

void CudaBackend::batch_norm_invstd(int64_t channels, float epsilon, const float* var, float* invstd) {
  activate();
  kernels::batch_norm_invstd(stream_.get(), channels, epsilon, var, invstd);
}

void CudaBackend::batch_norm_forward(int64_t rows, int64_t channels, const float* x, const float* mean,
                                     const float* invstd, const float* gamma, const float* beta, float* y) {
  if (rows == 0) return;
  activate();
  kernels::batch_norm_forward(stream_.get(), rows, channels, x, mean, invstd, gamma, beta, y);
}

void CudaBackend::batch_norm_backward_sums(int64_t rows, int64_t channels, const float* x, const float* dy,
                                           const float* mean, const float* invstd, float* sums) {
  MIRROR_REQUIRE(rows >= 0 && channels > 0, InvalidArgument, "invalid batch normalization sizes: ", rows,
                 " rows of ", channels, " channels");
  activate();
  kernels::batch_norm_backward_sums(stream_.get(), rows, channels, x, dy, mean, invstd,
                                    batch_norm_partials(rows, channels), sums);
}

void CudaBackend::batch_norm_backward_data(int64_t rows, int64_t channels, const float* x, const float* dy,
                                           const float* mean, const float* invstd, const float* gamma,
                                           const float* sums, double count, float* dx) {
  if (rows == 0) return;
  MIRROR_REQUIRE(count > 0, InvalidArgument, "batch normalization gradient over ", count, " rows");
  activate();
  kernels::batch_norm_backward_data(stream_.get(), rows, channels, x, dy, mean, invstd, gamma, sums, count, dx);
}

void CudaBackend::batch_norm_update_moving(int64_t channels, float momentum, const float* mean, const float* var,
                                           const float* guard, float* moving_mean, float* moving_var) {
  activate();
  kernels::batch_norm_update_moving(stream_.get(), channels, momentum, mean, var, guard, moving_mean, moving_var);
}

// ---- loss, metrics, statistics ----

void CudaBackend::loss(const LossSpec& spec, int64_t rows, int64_t cols, const float* outputs, const int32_t* labels,
                       float scale, float* dinput, float* stats) {
  if (rows == 0) return;
  // The spec is checked here; the labels are not (they live on the device; a bad one makes the loss NaN).
  MIRROR_REQUIRE(cols > 0 && spec.label_smoothing >= 0.0f && spec.label_smoothing <= 1.0f &&
                     (!spec.gradient_through_activation ||
                      (!spec.from_logits && spec.kind != LossKind::MeanSquaredError)),
                 InvalidArgument, "invalid loss: ", cols, " output columns, label_smoothing ", spec.label_smoothing,
                 ", from_logits ", spec.from_logits, ", gradient_through_activation ",
                 spec.gradient_through_activation,
                 " (which needs probabilities from a softmax or sigmoid just before a cross-entropy)");
  activate();
  kernels::loss(stream_.get(), spec, rows, cols, outputs, labels, scale, dinput, stats);
}

void CudaBackend::metric(const MetricSpec& spec, int64_t rows, int64_t cols, const float* outputs,
                         const int32_t* labels, float* stats) {
  if (rows == 0) return;
  MIRROR_REQUIRE(cols > 0, InvalidArgument, "a metric needs at least one output column, got ", cols);
  activate();
  kernels::metric(stream_.get(), spec, rows, cols, outputs, labels, stats);
}

void CudaBackend::accumulate_stats(size_t count, const float* step_stats, float* totals, int64_t step) {
  activate();
  kernels::accumulate_stats(stream_.get(), count, step_stats, totals, step);
}

// ---- optimizers ----

void CudaBackend::optimizer_update(size_t count, const OptimizerStep& step, const ParameterSegments& segments,
                                   const float* guard, float* params, const float* grads, float* slots) {
  activate();
  kernels::optimizer_update(stream_.get(), count, step, segments, guard, params, grads, slots);
}

void CudaBackend::clip_scales(const ParameterSegments& segments, const float* grads, float clip_norm, bool global,
                              float* scales) {
  MIRROR_REQUIRE(segments.bounds != nullptr && segments.count > 0, InvalidArgument,
                 "clip_scales needs the variables' bounds");
  activate();
  kernels::clip_scales(stream_.get(), segments, grads, clip_norm, global, scales);
}

}  // namespace mirror::cuda
