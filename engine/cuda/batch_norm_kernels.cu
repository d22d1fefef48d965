// Batch normalization over the last axis of x: (rows, channels), rows = batch * H * W.
//
// Own kernels rather than cuDNN's batch normalization, for two reasons: synchronized batch
// normalization takes its moments from sums all-reduced across replicas, which cuDNN's training
// call cannot be given (it computes the batch's moments itself); and cuDNN updates the running
// variance with the unbiased estimate (n / (n - 1) times the biased one) where Keras uses the
// biased one.
//
// The per-channel sums are deterministic: the same inputs give the same bits on any GPU. Pass 1
// cuts the rows into fixed chunks of kChunkRows (the host's blocks); a block of 32 channels x 8
// row lanes sums one chunk of one channel tile, each lane walking its rows in order, then the 8
// lanes are combined by a fixed tree in shared memory, giving one partial per (chunk, channel).
// Pass 2 adds the partials of each channel in chunk order. No atomics anywhere, and the chunking
// depends only on `rows`, never on the GPU's size. Sums are kept in double, as the host keeps
// them, so the hundreds of thousands of rows of a ResNet's first layers lose nothing; the GPUs
// built for (sm_80, sm_90) have the double throughput for it, and the pass stays memory-bound.
#include "mirror/engine/cuda/cuda_check.hpp"
#include "mirror/engine/cuda/kernels.hpp"
#include "mirror/engine/cuda/launch.cuh"
#include "mirror/engine/elementwise.hpp"

namespace mirror::cuda::kernels {
namespace {

constexpr int kTileChannels = 32;  // threadIdx.x: adjacent channels, so a warp reads 128 contiguous bytes
constexpr int kRowLanes = 8;       // threadIdx.y
constexpr int64_t kChunkRows = 512;
constexpr unsigned kMaxChunkBlocks = 65535;  // gridDim.y's limit; blocks loop over further chunks

constexpr int64_t chunks_for(int64_t rows) { return (rows + kChunkRows - 1) / kChunkRows; }

// The two terms summed per element for batch_norm_sums: x - shift and its square.
struct ShiftedTerms {
  const float* x;
  const float* shift;
  __device__ double2 operator()(int64_t r, int64_t c, int64_t channels) const {
    const double d = static_cast<double>(x[r * channels + c]) - (shift ? static_cast<double>(shift[c]) : 0.0);
    return {d, d * d};
  }
};

// The two terms summed per element for batch_norm_backward_sums: dy and dy * xhat.
struct GradientTerms {
  const float* x;
  const float* dy;
  const float* mean;
  const float* invstd;
  __device__ double2 operator()(int64_t r, int64_t c, int64_t channels) const {
    const int64_t i = r * channels + c;
    const float xhat = (x[i] - mean[c]) * invstd[c];
    return {static_cast<double>(dy[i]), static_cast<double>(dy[i]) * static_cast<double>(xhat)};
  }
};

// Pass 1. partials: (chunks, 2 * channels): [chunk, c] = first term's sum, [chunk, channels + c] = second's.
template <typename Terms>
__global__ void chunk_sums_kernel(int64_t rows, int64_t channels, Terms terms, double* partials) {
  __shared__ double first[kRowLanes][kTileChannels];
  __shared__ double second[kRowLanes][kTileChannels];
  const int64_t c = int64_t{blockIdx.x} * kTileChannels + threadIdx.x;
  const int64_t chunks = chunks_for(rows);
  for (int64_t chunk = blockIdx.y; chunk < chunks; chunk += gridDim.y) {
    const int64_t end = min(rows, (chunk + 1) * kChunkRows);
    double s1 = 0.0, s2 = 0.0;
    if (c < channels) {
      for (int64_t r = chunk * kChunkRows + threadIdx.y; r < end; r += kRowLanes) {
        const double2 t = terms(r, c, channels);
        s1 += t.x;
        s2 += t.y;
      }
    }
    first[threadIdx.y][threadIdx.x] = s1;
    second[threadIdx.y][threadIdx.x] = s2;
    __syncthreads();
    for (int half = kRowLanes / 2; half > 0; half /= 2) {
      if (static_cast<int>(threadIdx.y) < half) {
        first[threadIdx.y][threadIdx.x] += first[threadIdx.y + half][threadIdx.x];
        second[threadIdx.y][threadIdx.x] += second[threadIdx.y + half][threadIdx.x];
      }
      __syncthreads();
    }
    if (threadIdx.y == 0 && c < channels) {
      partials[chunk * 2 * channels + c] = first[0][threadIdx.x];
      partials[chunk * 2 * channels + channels + c] = second[0][threadIdx.x];
    }
    __syncthreads();  // the shared arrays are rewritten for the next chunk
  }
}

// Pass 2: sums[j] = sum over chunks of partials[chunk, j], in chunk order. sums: (2 * channels)
__global__ void combine_chunks_kernel(int64_t chunks, int64_t width, const double* partials, float* sums) {
  for (size_t j = global_thread(); j < static_cast<size_t>(width); j += grid_stride()) {
    double sum = 0.0;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) sum += partials[chunk * width + static_cast<int64_t>(j)];
    sums[j] = static_cast<float>(sum);
  }
}

template <typename Terms>
void channel_sums(cudaStream_t stream, int64_t rows, int64_t channels, Terms terms, double* partials, float* sums) {
  if (channels <= 0) return;
  if (rows <= 0) return fill(stream, sums, static_cast<size_t>(2 * channels), 0.0f);  // an empty share adds nothing
  const int64_t chunks = chunks_for(rows);
  const dim3 block(kTileChannels, kRowLanes);
  const dim3 grid(static_cast<unsigned>((channels + kTileChannels - 1) / kTileChannels),
                  static_cast<unsigned>(std::min<int64_t>(chunks, kMaxChunkBlocks)));
  chunk_sums_kernel<<<grid, block, 0, stream>>>(rows, channels, terms, partials);
  MIRROR_CUDA_LAUNCH_CHECK("chunk_sums_kernel");
  const size_t width = static_cast<size_t>(2 * channels);
  combine_chunks_kernel<<<grid_for(width), kBlockSize, 0, stream>>>(chunks, 2 * channels, partials, sums);
  MIRROR_CUDA_LAUNCH_CHECK("combine_chunks_kernel");
}

// One thread per channel.
__global__ void moments_kernel(int64_t channels, double count, float epsilon, const float* shift, const float* sums,
                               float* mean, float* var, float* invstd) {
  for (size_t c = global_thread(); c < static_cast<size_t>(channels); c += grid_stride())
    ew::batch_norm_moments(count, epsilon, shift ? shift[c] : 0.0f, sums[c], sums[channels + c], mean[c], var[c],
                           invstd[c]);
}

__global__ void invstd_kernel(int64_t channels, float epsilon, const float* var, float* invstd) {
  for (size_t c = global_thread(); c < static_cast<size_t>(channels); c += grid_stride())
    invstd[c] = ew::batch_norm_invstd(var[c], epsilon);
}

// y: (rows, channels)
__global__ void forward_kernel(size_t count, int64_t channels, const float* x, const float* mean, const float* invstd,
                               const float* gamma, const float* beta, float* y) {
  for (size_t i = global_thread(); i < count; i += grid_stride()) {
    const size_t c = i % static_cast<size_t>(channels);
    y[i] = (gamma ? gamma[c] : 1.0f) * ((x[i] - mean[c]) * invstd[c]) + (beta ? beta[c] : 0.0f);
  }
}

// dx: (rows, channels)
__global__ void backward_data_kernel(size_t count, int64_t channels, const float* x, const float* dy,
                                     const float* mean, const float* invstd, const float* gamma, const float* sums,
                                     double rows_total, float* dx) {
  for (size_t i = global_thread(); i < count; i += grid_stride()) {
    const size_t c = i % static_cast<size_t>(channels);
    dx[i] = ew::batch_norm_dx(x[i], dy[i], mean[c], invstd[c], gamma ? gamma[c] : 1.0f, sums[c],
                              sums[static_cast<size_t>(channels) + c], rows_total);
  }
}

// Skipped, like the optimizers, when the guard (the running loss) is not finite.
__global__ void update_moving_kernel(int64_t channels, float momentum, const float* mean, const float* var,
                                     const float* guard, float* moving_mean, float* moving_var) {
  if (!ew::step_allowed(guard)) return;
  for (size_t c = global_thread(); c < static_cast<size_t>(channels); c += grid_stride()) {
    moving_mean[c] = ew::moving_average(moving_mean[c], mean[c], momentum);
    moving_var[c] = ew::moving_average(moving_var[c], var[c], momentum);
  }
}

}  // namespace

size_t batch_norm_partials_count(int64_t rows, int64_t channels) {  // doubles
  return rows <= 0 || channels <= 0 ? 0 : static_cast<size_t>(chunks_for(rows) * 2 * channels);
}

void batch_norm_sums(cudaStream_t stream, int64_t rows, int64_t channels, const float* x, const float* shift,
                     double* partials, float* sums) {
  channel_sums(stream, rows, channels, ShiftedTerms{x, shift}, partials, sums);
}

void batch_norm_backward_sums(cudaStream_t stream, int64_t rows, int64_t channels, const float* x, const float* dy,
                              const float* mean, const float* invstd, double* partials, float* sums) {
  channel_sums(stream, rows, channels, GradientTerms{x, dy, mean, invstd}, partials, sums);
}

void batch_norm_moments(cudaStream_t stream, int64_t channels, double count, float epsilon, const float* shift,
                        const float* sums, float* mean, float* var, float* invstd) {
  if (channels <= 0) return;
  moments_kernel<<<grid_for(static_cast<size_t>(channels)), kBlockSize, 0, stream>>>(channels, count, epsilon, shift,
                                                                                    sums, mean, var, invstd);
  MIRROR_CUDA_LAUNCH_CHECK("moments_kernel");
}

void batch_norm_invstd(cudaStream_t stream, int64_t channels, float epsilon, const float* var, float* invstd) {
  if (channels <= 0) return;
  invstd_kernel<<<grid_for(static_cast<size_t>(channels)), kBlockSize, 0, stream>>>(channels, epsilon, var, invstd);
  MIRROR_CUDA_LAUNCH_CHECK("invstd_kernel");
}

void batch_norm_forward(cudaStream_t stream, int64_t rows, int64_t channels, const float* x, const float* mean,
                        const float* invstd, const float* gamma, const float* beta, float* y) {
  const size_t count = static_cast<size_t>(rows * channels);
  if (count == 0) return;
  forward_kernel<<<grid_for(count), kBlockSize, 0, stream>>>(count, channels, x, mean, invstd, gamma, beta, y);
  MIRROR_CUDA_LAUNCH_CHECK("batch_norm forward_kernel");
}

void batch_norm_backward_data(cudaStream_t stream, int64_t rows, int64_t channels, const float* x, const float* dy,
                              const float* mean, const float* invstd, const float* gamma, const float* sums,
                              double count, float* dx) {
  const size_t n = static_cast<size_t>(rows * channels);
  if (n == 0) return;
  backward_data_kernel<<<grid_for(n), kBlockSize, 0, stream>>>(n, channels, x, dy, mean, invstd, gamma, sums, count,
                                                               dx);
  MIRROR_CUDA_LAUNCH_CHECK("backward_data_kernel");
}

void batch_norm_update_moving(cudaStream_t stream, int64_t channels, float momentum, const float* mean,
                              const float* var, const float* guard, float* moving_mean, float* moving_var) {
  if (channels <= 0) return;
  update_moving_kernel<<<grid_for(static_cast<size_t>(channels)), kBlockSize, 0, stream>>>(
      channels, momentum, mean, var, guard, moving_mean, moving_var);
  MIRROR_CUDA_LAUNCH_CHECK("update_moving_kernel");
}

}  // namespace mirror::cuda::kernels
