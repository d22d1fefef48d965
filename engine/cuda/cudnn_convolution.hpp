// Convolutions through cuDNN, NHWC activations. Keras's kernels are HWIO; cuDNN's NHWC filter
// format is KRSC (out, kh, kw, in). HWIO read as a (kh*kw*in, out) matrix is the transpose of KRSC
// read as (out, kh*kw*in), so each call transposes on the fly with a small kernel into a scratch
// copy (forward, backward-data) or out of one (backward-weights): kh*kw*in*out elements, tiny next
// to the activations, and the parameters stay in Keras's layout everywhere else.
//
// Padding: a cuDNN descriptor pads both sides of a dimension alike, so the part of the padding that
// is the same on both sides goes into the descriptor and the rest (Keras's "same" with strides pads
// the bottom and right one pixel more) is applied exactly by copying the input into a zero-padded
// scratch image (forward, backward-weights); backward-data computes the gradient of that padded
// image into scratch and crops it.
//
// Descriptors and the algorithms of each direction are chosen once per geometry (cudnnFind, the
// fastest result, deterministic ones first for the backward passes; exact FMA math unless TF32 is
// allowed) and cached with the workspace size they need, keyed by the whole geometry cuDNN sees
// (shapes, strides, padding); the workspace and scratch buffers grow only while new geometries
// appear. At verbosity 2 each choice is logged once.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "mirror/engine/buffer.hpp"
#include "mirror/engine/cuda/library_check.hpp"
#include "mirror/engine/geometry.hpp"

namespace mirror::cuda {

struct SplitPadding;

class CudnnConvolutions {
 public:
  using Allocate = std::function<DeviceBuffer(size_t num_bytes)>;
  using FreeCache = std::function<void()>;

  // All work is queued on the stream `handle` is bound to; buffers come from `allocate`.
  // `free_cache` gives the allocator's cached memory back to the driver: cudnnFind allocates its
  // trial buffers itself, so when it runs out of memory the cache is freed and the search retried.
  CudnnConvolutions(cudnnHandle_t handle, cudaStream_t stream, Allocate allocate, FreeCache free_cache,
                    bool allow_tf32);
  ~CudnnConvolutions();
  CudnnConvolutions(const CudnnConvolutions&) = delete;
  CudnnConvolutions& operator=(const CudnnConvolutions&) = delete;

  // y = conv(x, w) without bias, with g's strides and padding.
  // x: (batch, in_h, in_w, in_c), w: HWIO, y: (batch, out_h, out_w, out_c)
  void forward(const ConvGeometry& g, const float* x, const float* w, float* y);
  // dw (HWIO, overwritten) from x and dy.
  void backward_weights(const ConvGeometry& g, const float* x, const float* dy, float* dw);
  // dx (overwritten) from w (HWIO) and dy.
  void backward_data(const ConvGeometry& g, const float* w, const float* dy, float* dx);

 private:
  struct Plan;
  // `g` must have symmetric padding (ConvGeometry::symmetric()).
  Plan& plan_for(const ConvGeometry& g);
  // Runs `find` (a cudnnFind call); on out-of-memory frees this object's workspace and the
  // allocator's cache and runs it once more. Throws DeviceError when it still fails.
  template <typename Find>
  void search(const char* direction, const ConvGeometry& g, Find find);
  // Keeps the usable result of a search, sets its math type on `conv`, logs it at verbosity 2.
  template <typename Perf>
  void choose(const char* direction, const ConvGeometry& g, cudnnConvolutionDescriptor_t conv, const Perf* results,
              int returned, bool prefer_deterministic, std::optional<Perf>& chosen);
  void* workspace(size_t num_bytes);
  float* weight_scratch(size_t count);
  float* padded_scratch(size_t count);
  // x itself, or x copied into padded_scratch with the padding the descriptor cannot take.
  const float* padded_input(const SplitPadding& split, const float* x);

  cudnnHandle_t handle_;
  cudaStream_t stream_;
  Allocate allocate_;
  FreeCache free_cache_;
  bool allow_tf32_;
  std::vector<std::unique_ptr<Plan>> plans_;
  DeviceBuffer workspace_;
  DeviceBuffer weight_scratch_;
  DeviceBuffer padded_scratch_;  // the zero-padded input, or the gradient of it, of an asymmetric padding
};

}  // namespace mirror::cuda
