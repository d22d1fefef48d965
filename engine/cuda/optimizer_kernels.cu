// Fused optimizer steps over a replica's flat parameter buffer: one launch per step, and the sums
// of squares clipping by norm needs. The step is skipped on the device when the loss in `guard` is
// not finite, so the host never has to wait for the loss before updating.
#include "mirror/engine/cuda/cuda_check.hpp"
#include "mirror/engine/cuda/kernels.hpp"
#include "mirror/engine/cuda/launch.cuh"
#include "mirror/engine/elementwise.hpp"

namespace mirror::cuda::kernels {
namespace {

template <OptimizerRule kRule>
__global__ void optimizer_kernel(size_t count, OptimizerStep step, ParameterSegments segments, const float* guard,
                                 float* params, const float* grads, float* slots) {
  if (!ew::step_allowed(guard)) return;
  const bool per_variable = segments.bounds && (segments.grad_scales || segments.decay);
  for (size_t i = global_thread(); i < count; i += grid_stride()) {
    float scale = 1.0f, decay = 1.0f;
    if (per_variable) {
      const int64_t s = ew::segment_of(segments.bounds, segments.count, static_cast<int64_t>(i));
      if (segments.grad_scales) scale = segments.grad_scales[s];
      if (segments.decay) decay = segments.decay[s];
    }
    ew::optimizer_element<kRule>(step, scale, decay, i, count, params, grads, slots);
  }
}

// Block b sums the squares of its range of `grads` (variable b's, or with `global` all of them:
// one block) in a fixed order: each thread strides, then a tree over the threads.
__global__ void clip_scales_kernel(ParameterSegments segments, const float* grads, float clip_norm, bool global,
                                   float* scales) {
  __shared__ double partial[kBlockSize];
  const int64_t begin = global ? 0 : segments.bounds[blockIdx.x];
  const int64_t end = global ? segments.bounds[segments.count] : segments.bounds[blockIdx.x + 1];
  double sum = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kBlockSize) sum += double{grads[i]} * double{grads[i]};
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int width = kBlockSize / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  const float factor = ew::clip_factor(partial[0], clip_norm);
  if (!global) {
    if (threadIdx.x == 0) scales[blockIdx.x] = factor;
    return;
  }
  for (int64_t s = threadIdx.x; s < segments.count; s += kBlockSize) scales[s] = factor;
}

__global__ void accumulate_stats_kernel(size_t count, const float* step_stats, float* totals, float step) {
  ew::accumulate_stats(count, step_stats, totals, step);
}

}  // namespace

void accumulate_stats(cudaStream_t stream, size_t count, const float* step_stats, float* totals, int64_t step) {
  accumulate_stats_kernel<<<1, 1, 0, stream>>>(count, step_stats, totals, static_cast<float>(step));
  MIRROR_CUDA_LAUNCH_CHECK("accumulate_stats_kernel");
}

void optimizer_update(cudaStream_t stream, size_t count, const OptimizerStep& step, const ParameterSegments& segments,
                      const float* guard, float* params, const float* grads, float* slots) {
  if (count == 0) return;
  switch (step.rule) {
    case OptimizerRule::SGD:
      optimizer_kernel<OptimizerRule::SGD><<<grid_for(count), kBlockSize, 0, stream>>>(count, step, segments, guard,
                                                                                       params, grads, slots);
      break;
    case OptimizerRule::Adam:
      optimizer_kernel<OptimizerRule::Adam><<<grid_for(count), kBlockSize, 0, stream>>>(count, step, segments, guard,
                                                                                        params, grads, slots);
      break;
    case OptimizerRule::RMSprop:
      optimizer_kernel<OptimizerRule::RMSprop><<<grid_for(count), kBlockSize, 0, stream>>>(count, step, segments,
                                                                                           guard, params, grads, slots);
      break;
  }
  MIRROR_CUDA_LAUNCH_CHECK("optimizer_kernel");
}

void clip_scales(cudaStream_t stream, const ParameterSegments& segments, const float* grads, float clip_norm,
                 bool global, float* scales) {
  const auto blocks = static_cast<unsigned>(global ? 1 : segments.count);
  clip_scales_kernel<<<blocks, kBlockSize, 0, stream>>>(segments, grads, clip_norm, global, scales);
  MIRROR_CUDA_LAUNCH_CHECK("clip_scales_kernel");
}

}  // namespace mirror::cuda::kernels
