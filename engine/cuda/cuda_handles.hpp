// Move-only RAII owners of CUDA runtime, cuDNN and cuBLAS handles, a guard that restores the
// current device, and pinned host buffers. Constructors throw DeviceError; destructors never throw
// (a failing destroy call at process exit is ignored).
#pragma once

#include <cstddef>
#include <utility>

#include "mirror/engine/cuda/library_check.hpp"

namespace mirror::cuda {

// Makes `device` current for the guard's lifetime and restores the previous one after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    MIRROR_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) MIRROR_CUDA_CHECK(cudaSetDevice(device));
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  ~DeviceGuard() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

// Shared shape of the handle owners: a raw handle plus its destroy function.
template <typename Handle, typename Traits>
class UniqueHandle {
 public:
  UniqueHandle() = default;
  explicit UniqueHandle(Handle h) : handle_(h) {}
  UniqueHandle(UniqueHandle&& other) noexcept : handle_(std::exchange(other.handle_, Handle{})) {}
  UniqueHandle& operator=(UniqueHandle&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, Handle{});
    }
    return *this;
  }
  UniqueHandle(const UniqueHandle&) = delete;
  UniqueHandle& operator=(const UniqueHandle&) = delete;
  ~UniqueHandle() { reset(); }

  Handle get() const { return handle_; }
  explicit operator bool() const { return handle_ != Handle{}; }
  void reset() noexcept {
    if (handle_ != Handle{}) Traits::destroy(handle_);
    handle_ = Handle{};
  }

 private:
  Handle handle_{};
};

struct StreamTraits {
  static void destroy(cudaStream_t s) noexcept { cudaStreamDestroy(s); }
};
struct EventTraits {
  static void destroy(cudaEvent_t e) noexcept { cudaEventDestroy(e); }
};
struct CudnnTraits {
  static void destroy(cudnnHandle_t h) noexcept { cudnnDestroy(h); }
};
struct CublasTraits {
  static void destroy(cublasHandle_t h) noexcept { cublasDestroy(h); }
};

// A non-blocking stream on the current device (no implicit sync with the legacy default stream).
class Stream : public UniqueHandle<cudaStream_t, StreamTraits> {
 public:
  Stream() = default;
  static Stream create() {
    cudaStream_t s = nullptr;
    MIRROR_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return Stream(s);
  }

 private:
  explicit Stream(cudaStream_t s) : UniqueHandle(s) {}
};

// An event without timing (the cheap kind used for ordering streams and polling completion).
class Event : public UniqueHandle<cudaEvent_t, EventTraits> {
 public:
  Event() = default;
  static Event create(bool timing = false) {
    cudaEvent_t e = nullptr;
    MIRROR_CUDA_CHECK(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
    return Event(e);
  }

 private:
  explicit Event(cudaEvent_t e) : UniqueHandle(e) {}
};

class CudnnHandle : public UniqueHandle<cudnnHandle_t, CudnnTraits> {
 public:
  CudnnHandle() = default;
  static CudnnHandle create(cudaStream_t stream) {
    cudnnHandle_t h = nullptr;
    MIRROR_CUDNN_CHECK(cudnnCreate(&h));
    CudnnHandle owner(h);
    MIRROR_CUDNN_CHECK(cudnnSetStream(h, stream));
    return owner;
  }

 private:
  explicit CudnnHandle(cudnnHandle_t h) : UniqueHandle(h) {}
};

class CublasHandle : public UniqueHandle<cublasHandle_t, CublasTraits> {
 public:
  CublasHandle() = default;
  static CublasHandle create(cudaStream_t stream) {
    cublasHandle_t h = nullptr;
    MIRROR_CUBLAS_CHECK(cublasCreate(&h));
    CublasHandle owner(h);
    MIRROR_CUBLAS_CHECK(cublasSetStream(h, stream));
    return owner;
  }

 private:
  explicit CublasHandle(cublasHandle_t h) : UniqueHandle(h) {}
};

// Page-locked host memory, for asynchronous copies that really are asynchronous.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t num_bytes) : num_bytes_(num_bytes) {
    if (num_bytes > 0) MIRROR_CUDA_CHECK(cudaMallocHost(&data_, num_bytes));
  }
  PinnedBuffer(PinnedBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), num_bytes_(std::exchange(other.num_bytes_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept {
    if (this != &other) {
      reset();
      data_ = std::exchange(other.data_, nullptr);
      num_bytes_ = std::exchange(other.num_bytes_, 0);
    }
    return *this;
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() { reset(); }

  void reset() noexcept {
    if (data_) cudaFreeHost(data_);
    data_ = nullptr;
    num_bytes_ = 0;
  }
  template <typename T = void>
  T* as() const { return static_cast<T*>(data_); }
  size_t num_bytes() const { return num_bytes_; }

 private:
  void* data_ = nullptr;
  size_t num_bytes_ = 0;
};

}  // namespace mirror::cuda
