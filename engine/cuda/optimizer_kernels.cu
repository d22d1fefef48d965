// Fused optimizer steps over a replica's flat parameter buffer: one launch each. The step is
// skipped on the device when the loss in `guard` is not finite, so the host never has to wait for
// the loss before updating.
#include "engine/cuda/cuda_check.hpp"
#include "engine/cuda/kernels.hpp"
#include "engine/cuda/launch.cuh"
#include "engine/elementwise.hpp"

namespace mirror::cuda::kernels {
namespace {

__global__ void adam_kernel(size_t count, AdamStep step, const float* guard, float* params, const float* grads,
                            float* m, float* v) {
  if (!ew::step_allowed(guard)) return;
  for (size_t i = global_thread(); i < count; i += grid_stride()) ew::adam(step, params[i], grads[i], m[i], v[i]);
}

__global__ void sgd_kernel(size_t count, SgdStep step, const float* guard, float* params, const float* grads,
                           float* momentum) {
  if (!ew::step_allowed(guard)) return;
  for (size_t i = global_thread(); i < count; i += grid_stride())
    ew::sgd(step, params[i], grads[i], momentum ? momentum + i : nullptr);
}

__global__ void accumulate_stats_kernel(size_t count, const float* step_stats, float* totals, float step) {
  ew::accumulate_stats(count, step_stats, totals, step);
}

}  // namespace

void accumulate_stats(cudaStream_t stream, size_t count, const float* step_stats, float* totals, int64_t step) {
  accumulate_stats_kernel<<<1, 1, 0, stream>>>(count, step_stats, totals, static_cast<float>(step));
  MIRROR_CUDA_LAUNCH_CHECK("accumulate_stats_kernel");
}

void adam_update(cudaStream_t stream, size_t count, const AdamStep& step, const float* guard, float* params,
                 const float* grads, float* m, float* v) {
  if (count == 0) return;
  adam_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(count, step, guard, params, grads, m, v);
  MIRROR_CUDA_LAUNCH_CHECK("adam_kernel");
}

void sgd_update(cudaStream_t stream, size_t count, const SgdStep& step, const float* guard, float* params,
                const float* grads, float* momentum) {
  if (count == 0) return;
  sgd_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(count, step, guard, params, grads, momentum);
  MIRROR_CUDA_LAUNCH_CHECK("sgd_kernel");
}

}  // namespace mirror::cuda::kernels
