// CudaBackend, part 1: construction, memory, input batches. (The layer ops are in cuda_layers.cpp;
// batch normalization, losses, metrics and optimizers in cuda_training_ops.cpp.)
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "mirror/engine/cuda/cuda_backend_impl.hpp"
#include "mirror/engine/cuda/kernels.hpp"
#include "mirror/engine/data/dataset.hpp"

namespace mirror::cuda {
namespace {

// The uint8 images and int32 labels of a data set in device memory, uploaded once.
struct CudaResidentImages final : ResidentImages {
  int device = 0;
  int64_t count = 0, sample_size = 0;
  DeviceBuffer pixels;  // (count, sample_size) uint8
  DeviceBuffer labels;  // (count) int32
};

}  // namespace

bool tf32_allowed() {
  const char* value = std::getenv("MIRROR_ALLOW_TF32");
  return value && std::string_view(value) == "1";
}

CudaBackend::CudaBackend(const Device& device) : device_(device), pool_(DeviceMemoryPool::for_device(device.index)) {
  MIRROR_REQUIRE(device.kind == DeviceKind::GPU, InvalidArgument, "the CUDA backend runs on GPUs, not on ",
                 device.name());
  DeviceGuard guard(device.index);
  stream_ = Stream::create();
  pool_.adopt_stream(stream_.get());
  cudnn_ = CudnnHandle::create(stream_.get());
  cublas_ = CublasHandle::create(stream_.get());
  const bool allow_tf32 = tf32_allowed();  // once: cuBLAS and cuDNN must agree
  MIRROR_CUBLAS_CHECK(cublasSetMathMode(cublas_.get(), allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  MIRROR_CUBLAS_CHECK(cublasSetPointerMode(cublas_.get(), CUBLAS_POINTER_MODE_HOST));
  convolutions_ = std::make_unique<CudnnConvolutions>(
      cudnn_.get(), stream_.get(), [this](size_t num_bytes) { return allocate(num_bytes); },
      [this] { pool_.empty_cache(); }, allow_tf32);
  for (auto& event : staging_copied_) event = Event::create();
}

CudaBackend::~CudaBackend() {
  // May run on any thread: make this GPU current (the library handles are destroyed on it), and
  // wait, since nothing may be pending on the stream when it and the buffers it uses go away.
  int previous = 0;
  const bool restore = cudaGetDevice(&previous) == cudaSuccess;
  cudaSetDevice(device_.index);
  cudaStreamSynchronize(stream_.get());
  convolutions_.reset();
  ones_.reset();
  partials_.reset();
  device_indices_.reset();
  pool_.retire_stream(stream_.get());
  cudnn_.reset();
  cublas_.reset();
  stream_.reset();
  if (restore) cudaSetDevice(previous);
}

void CudaBackend::activate() const {
  int current = -1;
  MIRROR_CUDA_CHECK(cudaGetDevice(&current));
  if (current != device_.index) MIRROR_CUDA_CHECK(cudaSetDevice(device_.index));
}

void CudaBackend::bind_current_thread() { MIRROR_CUDA_CHECK(cudaSetDevice(device_.index)); }

// ---- memory ----

DeviceBuffer CudaBackend::allocate_memory(size_t num_bytes) {
  if (num_bytes == 0) return DeviceBuffer();
  void* ptr = pool_.allocate(num_bytes, stream_.get());
  DeviceMemoryPool* pool = &pool_;
  cudaStream_t stream = stream_.get();
  return DeviceBuffer(ptr, num_bytes, [pool, stream](void* p, size_t) { pool->release(p, stream); });
}

void CudaBackend::upload(const void* host_src, void* dst, size_t num_bytes) {
  if (num_bytes == 0) return;
  activate();
  // From pageable memory this returns once the source has been read, so the caller may reuse it.
  MIRROR_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, num_bytes, cudaMemcpyHostToDevice, stream_.get()));
}

void CudaBackend::download(const void* src, void* host_dst, size_t num_bytes) {
  activate();
  if (num_bytes > 0)
    MIRROR_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, num_bytes, cudaMemcpyDeviceToHost, stream_.get()));
  MIRROR_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
}

void CudaBackend::copy(const float* src, float* dst, size_t count) {
  if (count == 0 || src == dst) return;
  activate();
  MIRROR_CUDA_CHECK(cudaMemcpyAsync(dst, src, count * sizeof(float), cudaMemcpyDeviceToDevice, stream_.get()));
}

void CudaBackend::fill(float* dst, size_t count, float value) {
  activate();
  kernels::fill(stream_.get(), dst, count, value);
}

void CudaBackend::synchronize() {
  activate();
  MIRROR_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
}

// ---- input ----

// Returns once the copy is complete, so the result may be read from any stream of this GPU; its
// memory returns to this backend's stream when it is destroyed, so destroy it only after the
// streams that read it have finished (Backend::synchronize).
std::unique_ptr<ResidentImages> CudaBackend::make_resident(const ImageSet& images) {
  activate();
  MIRROR_REQUIRE(static_cast<int64_t>(images.pixels.size()) == images.count * images.sample_size() &&
                     static_cast<int64_t>(images.labels.size()) == images.count,
                 InvalidArgument, "image set holds ", images.pixels.size(), " pixels and ", images.labels.size(),
                 " labels for ", images.count, " images of ", images.sample_size(), " pixels");
  auto resident = std::make_unique<CudaResidentImages>();
  resident->device = device_.index;
  resident->count = images.count;
  resident->sample_size = images.sample_size();
  resident->pixels = allocate(images.pixels.size());
  resident->labels = allocate(images.labels.size() * sizeof(int32_t));
  upload(images.pixels.data(), resident->pixels.data(), images.pixels.size());
  upload(images.labels.data(), resident->labels.data(), images.labels.size() * sizeof(int32_t));
  synchronize();
  return resident;
}

void CudaBackend::gather_batch(const ResidentImages& images, std::span<const int32_t> indices, float* x,
                               int32_t* labels) {
  const auto* resident = dynamic_cast<const CudaResidentImages*>(&images);
  MIRROR_REQUIRE(resident && resident->device == device_.index, InvalidArgument,
                 "gather_batch on ", device_.name(), " needs images made resident by a CUDA backend on that GPU");
  if (indices.empty()) return;
  for (size_t i = 0; i < indices.size(); ++i)
    MIRROR_REQUIRE(indices[i] >= 0 && indices[i] < resident->count, InvalidArgument, "batch index ", indices[i],
                   " at position ", i, " is outside the data set's [0, ", resident->count, ")");
  activate();
  const size_t num_bytes = indices.size_bytes();
  const int slot = next_staging_;
  next_staging_ = 1 - next_staging_;
  PinnedBuffer& staging = staging_[static_cast<size_t>(slot)];
  cudaEvent_t copied = staging_copied_[static_cast<size_t>(slot)].get();
  MIRROR_CUDA_CHECK(cudaEventSynchronize(copied));  // the copy out of this slot two calls ago has run
  if (staging.num_bytes() < num_bytes) staging = PinnedBuffer(num_bytes);
  if (device_indices_.num_bytes() < num_bytes) device_indices_ = allocate(num_bytes);
  std::memcpy(staging.as(), indices.data(), num_bytes);
  MIRROR_CUDA_CHECK(cudaMemcpyAsync(device_indices_.data(), staging.as(), num_bytes, cudaMemcpyHostToDevice,
                                    stream_.get()));
  MIRROR_CUDA_CHECK(cudaEventRecord(copied, stream_.get()));
  kernels::gather_batch(stream_.get(), resident->pixels.as<uint8_t>(), resident->labels.as<int32_t>(),
                        resident->sample_size, device_indices_.as<int32_t>(), static_cast<int64_t>(indices.size()),
                        x, labels);
}

// ---- public helpers ----

std::unique_ptr<Backend> make_cuda_backend(const Device& device) { return std::make_unique<CudaBackend>(device); }

cudaStream_t stream_of(const Backend& backend) {
  const auto* cuda = dynamic_cast<const CudaBackend*>(&backend);
  MIRROR_REQUIRE(cuda, InvalidArgument, "the backend of ", backend.device().name(), " is not a CUDA backend");
  return cuda->stream();
}

}  // namespace mirror::cuda
