// The per-device caching allocator (see memory_pool.hpp).
#include "mirror/engine/cuda/memory_pool.hpp"

#include <array>
#include <bit>
#include <memory>

#include "mirror/engine/cuda/cuda_check.hpp"
#include "mirror/engine/cuda/cuda_handles.hpp"

namespace mirror::cuda {
namespace {

constexpr int kMaxDevices = 64;
constexpr size_t kMinBlock = 256;
constexpr size_t kSmallLimit = size_t{1} << 20;

double mib(size_t num_bytes) { return static_cast<double>(num_bytes) / (1024.0 * 1024.0); }

}  // namespace

DeviceMemoryPool& DeviceMemoryPool::for_device(int device) {
  MIRROR_REQUIRE(device >= 0 && device < kMaxDevices, InvalidArgument, "GPU index ", device, " is out of range");
  static std::mutex registry_mutex;
  // Deliberately leaked: see the header.
  static auto* pools = new std::array<DeviceMemoryPool*, kMaxDevices>{};
  std::lock_guard lock(registry_mutex);
  DeviceMemoryPool*& pool = (*pools)[static_cast<size_t>(device)];
  if (!pool) pool = new DeviceMemoryPool(device);
  return *pool;
}

size_t DeviceMemoryPool::size_class(size_t num_bytes) {
  if (num_bytes <= kMinBlock) return kMinBlock;
  const size_t power = std::bit_ceil(num_bytes);
  if (power <= kSmallLimit) return power;
  const size_t step = power / 16;  // classes between power/2 and power, eight of them
  return (num_bytes + step - 1) / step * step;
}

void* DeviceMemoryPool::allocate(size_t num_bytes, cudaStream_t stream) {
  const size_t cls = size_class(num_bytes);
  std::lock_guard lock(mutex_);
  for (cudaStream_t key : {stream, static_cast<cudaStream_t>(nullptr)}) {
    auto it = free_.find({key, cls});
    if (it != free_.end() && !it->second.empty()) {
      void* ptr = it->second.back();
      it->second.pop_back();
      live_.emplace(ptr, cls);
      stats_.bytes_in_use += cls;
      return ptr;
    }
  }
  DeviceGuard guard(device_);
  void* ptr = nullptr;
  cudaError_t status = cudaMalloc(&ptr, cls);
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear it, then give the cache back and try once more
    free_cached_locked();
    status = cudaMalloc(&ptr, cls);
  }
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    throw DeviceError(str("out of memory on GPU ", device_, ": asked for ", mib(cls), " MiB with ",
                          mib(stats_.bytes_in_use), " MiB in use by Mirror and ", mib(free_bytes), " of ",
                          mib(total_bytes), " MiB free on the device; use a smaller batch size or fewer "
                          "replicas per GPU"));
  }
  MIRROR_CUDA_CHECK(status);
  ++stats_.device_allocations;
  stats_.bytes_reserved += cls;
  stats_.bytes_in_use += cls;
  live_.emplace(ptr, cls);
  return ptr;
}

void DeviceMemoryPool::release(void* ptr, cudaStream_t stream) noexcept {
  if (!ptr) return;
  std::lock_guard lock(mutex_);
  auto it = live_.find(ptr);
  if (it == live_.end()) return;  // not ours: nothing sensible to do in a noexcept path
  const size_t cls = it->second;
  live_.erase(it);
  stats_.bytes_in_use -= cls;
  const cudaStream_t key = retired_.count(stream) ? nullptr : stream;
  free_[{key, cls}].push_back(ptr);
}

void DeviceMemoryPool::retire_stream(cudaStream_t stream) noexcept {
  cudaStreamSynchronize(stream);  // its queued work may still read its cached blocks
  std::lock_guard lock(mutex_);
  retired_.insert(stream);
  for (auto it = free_.begin(); it != free_.end();) {
    if (it->first.first == stream) {
      auto& neutral = free_[{nullptr, it->first.second}];
      neutral.insert(neutral.end(), it->second.begin(), it->second.end());
      it = free_.erase(it);
    } else {
      ++it;
    }
  }
}

void DeviceMemoryPool::adopt_stream(cudaStream_t stream) {
  std::lock_guard lock(mutex_);
  retired_.erase(stream);
}

void DeviceMemoryPool::empty_cache() noexcept {
  std::lock_guard lock(mutex_);
  free_cached_locked();
}

void DeviceMemoryPool::free_cached_locked() noexcept {
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess) return;
  cudaSetDevice(device_);
  cudaDeviceSynchronize();  // cached blocks of live streams may still be in use by queued work
  for (auto& [key, blocks] : free_) {
    for (void* ptr : blocks) {
      cudaFree(ptr);
      stats_.bytes_reserved -= key.second;
    }
  }
  free_.clear();
  cudaSetDevice(previous);
}

PoolStats DeviceMemoryPool::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace mirror::cuda
