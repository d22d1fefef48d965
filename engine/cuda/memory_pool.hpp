// A caching allocator of device memory, one per GPU: cudaMalloc is called only when no cached
// block of the size class is free, so a training loop stops allocating after its first steps.
// Blocks are cached per stream: a block released on stream S may still be read by work queued on
// S, so it is handed out again only to S (stream order makes that safe) -- or to any stream once S
// is retired, which waits for S first.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

namespace mirror::cuda {

struct PoolStats {
  size_t device_allocations = 0;  // cudaMalloc calls so far
  size_t bytes_reserved = 0;      // held from the driver: in use + cached
  size_t bytes_in_use = 0;        // handed out and not yet released
};

class DeviceMemoryPool {
 public:
  // The pool of `device`, created on first use. Pools live until the process exits and are never
  // destroyed (the driver reclaims the memory), so a buffer released during static destruction
  // still finds its pool.
  static DeviceMemoryPool& for_device(int device);

  // A block of at least `num_bytes` (256-byte aligned) for use in the order of `stream`. Frees the
  // cache and retries once when the device is out of memory; then throws DeviceError.
  void* allocate(size_t num_bytes, cudaStream_t stream);
  // Returns a block from allocate(); work already queued on `stream` may still use it.
  void release(void* ptr, cudaStream_t stream) noexcept;
  // `stream` is about to be destroyed: waits for it and lets any stream reuse its cached blocks.
  void retire_stream(cudaStream_t stream) noexcept;
  // A new stream: forgets an earlier retirement of the same handle value.
  void adopt_stream(cudaStream_t stream);
  // Waits for the device and returns every cached block to the driver. Also for libraries that
  // allocate outside the pool (cuDNN's algorithm search) when they run out of memory.
  void empty_cache() noexcept;

  PoolStats stats() const;
  int device() const { return device_; }

  // The size class a request is served from: powers of two up to 1 MiB, then steps of 1/8 of
  // the enclosing power of two (at most 12.5% waste).
  static size_t size_class(size_t num_bytes);

 private:
  explicit DeviceMemoryPool(int device) : device_(device) {}
  void free_cached_locked() noexcept;

  const int device_;
  mutable std::mutex mutex_;
  std::unordered_map<void*, size_t> live_;  // block -> size class, for blocks handed out
  // (stream or nullptr for "any stream", size class) -> free blocks.
  std::map<std::pair<cudaStream_t, size_t>, std::vector<void*>> free_;
  std::set<cudaStream_t> retired_;
  PoolStats stats_;
};

}  // namespace mirror::cuda
