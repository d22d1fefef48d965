// The host backend's memory, input, statistics and optimizer ops, and its factory. The
// element-wise math is engine/elementwise.hpp's, so the CUDA backend runs exactly the same
// formulas. The other ops live in host_*.cpp files, one per concept.
#include <omp.h>

#include <cstdlib>
#include <cstring>

#include "mirror/engine/data/dataset.hpp"
#include "mirror/engine/elementwise.hpp"
#include "mirror/engine/host/host_backend.hpp"
#include "mirror/engine/host/host_backend_impl.hpp"

namespace mirror {
namespace host {
namespace {

constexpr size_t kAlignment = 64;  // a cache line, and what AVX-512 loads like

// The host ImageSet itself: gathering reads it in place. The ImageSet must outlive this object.
class HostResidentImages final : public ResidentImages {
 public:
  explicit HostResidentImages(const ImageSet& images) : images_(&images) {}
  const ImageSet& images() const { return *images_; }

 private:
  const ImageSet* images_;
};

void release_aligned(void* data, size_t /*num_bytes*/) { std::free(data); }

}  // namespace

HostBackend::HostBackend(int threads)
    : device_(list_physical_devices(DeviceKind::CPU).at(0)), threads_(threads) {
  MIRROR_REQUIRE(threads >= 1, InvalidArgument, "a host backend needs at least 1 thread, got ", threads);
  active_isa();  // an unknown MIRROR_HOST_ISA is reported here, not inside a parallel region
  MIRROR_DNNL_TRY(engine_ = dnnl::engine(dnnl::engine::kind::cpu, 0));
  MIRROR_DNNL_TRY(stream_ = dnnl::stream(engine_));
}

HostBackend::~HostBackend() = default;

void HostBackend::bind_current_thread() {
  // OpenMP's thread count is an ICV of the calling thread, so each replica's worker gets its own
  // share of the cores. oneDNN fixes a primitive's thread count when it is created, so primitives
  // made on another thread (or before this call) are dropped and remade here on first use.
  omp_set_num_threads(threads_);
  conv_cache_.clear();
  eltwise_cache_.clear();
}

// ---- memory ----

DeviceBuffer HostBackend::allocate_memory(size_t num_bytes) {
  const size_t rounded = (num_bytes + kAlignment - 1) / kAlignment * kAlignment;
  void* data = std::aligned_alloc(kAlignment, rounded == 0 ? kAlignment : rounded);
  MIRROR_REQUIRE(data != nullptr, DeviceError, "out of host memory allocating ", num_bytes, " bytes");
  return DeviceBuffer(data, num_bytes, release_aligned);
}

void HostBackend::upload(const void* host_src, void* dst, size_t num_bytes) {
  if (num_bytes) std::memcpy(dst, host_src, num_bytes);
}

void HostBackend::download(const void* src, void* host_dst, size_t num_bytes) {
  if (num_bytes) std::memcpy(host_dst, src, num_bytes);
}

void HostBackend::copy(const float* src, float* dst, size_t count) {
  if (count) std::memcpy(dst, src, count * sizeof(float));
}

void HostBackend::fill(float* dst, size_t count, float value) {
  const auto n = static_cast<int64_t>(count);
#pragma omp parallel for num_threads(threads_) if (n >= 16 * kParallelMinCount)
  for (int64_t i = 0; i < n; ++i) dst[i] = value;
}

// ---- input ----

std::unique_ptr<ResidentImages> HostBackend::make_resident(const ImageSet& images) {
  return std::make_unique<HostResidentImages>(images);
}

void HostBackend::gather_batch(const ResidentImages& resident, std::span<const int32_t> indices, float* x,
                               int32_t* labels) {
  const auto* host_images = dynamic_cast<const HostResidentImages*>(&resident);
  MIRROR_REQUIRE(host_images != nullptr, InvalidArgument,
                 "gather_batch on the host was given images made resident by another backend");
  const ImageSet& images = host_images->images();
  const int64_t sample_size = images.sample_size();
  const auto rows = static_cast<int64_t>(indices.size());
  for (int64_t i = 0; i < rows; ++i) {
    const int32_t index = indices[static_cast<size_t>(i)];
    MIRROR_REQUIRE(index >= 0 && index < images.count, InvalidArgument, "sample index ", index,
                   " at batch position ", i, " is outside [0, ", images.count, ")");
    labels[i] = images.labels[static_cast<size_t>(index)];
  }
#pragma omp parallel for num_threads(threads_) if (rows * sample_size >= kParallelMinCount)
  for (int64_t i = 0; i < rows; ++i) {
    const uint8_t* src = images.pixels.data() + indices[static_cast<size_t>(i)] * sample_size;
    float* dst = x + i * sample_size;
    for (int64_t k = 0; k < sample_size; ++k) dst[k] = static_cast<float>(src[k]) / 255.0f;
  }
}

// ---- statistics (the optimizers are host_optimizers.cpp) ----

void HostBackend::accumulate_stats(size_t count, const float* step_stats, float* totals, int64_t step) {
  ew::accumulate_stats(count, step_stats, totals, static_cast<float>(step));
}

}  // namespace host

std::unique_ptr<Backend> make_host_backend(int threads) { return std::make_unique<host::HostBackend>(threads); }

}  // namespace mirror
