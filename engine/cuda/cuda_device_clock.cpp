// CudaDeviceClock: trace spans in device time on a CudaBackend's stream (see DeviceClock in
// engine/trace.hpp). Every mark is a timing event recorded on the stream, created when tracing
// starts; a mark's time is its elapsed time from an origin event, which the host waited for when
// the clock was reset and took its own clock's time then. Spans are also NVTX ranges (NVTX 3,
// header-only: they cost nothing unless a tool such as Nsight Systems is attached).
#include <nvtx3/nvToolsExt.h>

#include <vector>

#include "mirror/engine/cuda/cuda_backend_impl.hpp"
#include "mirror/engine/cuda/cuda_check.hpp"

namespace mirror::cuda {
namespace {

class CudaDeviceClock final : public DeviceClock {
 public:
  CudaDeviceClock(int device, cudaStream_t stream) : device_(device), stream_(stream) {}

  void reset(size_t marks) override {
    const DeviceGuard guard(device_);
    next_ = 0;
    while (events_.size() < marks) events_.push_back(Event::create(true));
    if (!origin_) origin_ = Event::create(true);
    // The origin: recorded behind what the stream holds, waited for, and matched with the host's
    // clock (late by the wait's wake-up, a few microseconds).
    MIRROR_CUDA_CHECK(cudaEventRecord(origin_.get(), stream_));
    MIRROR_CUDA_CHECK(cudaEventSynchronize(origin_.get()));
    origin_host_ns_ = Tracer::now_ns();
  }

  int64_t mark() noexcept override {
    if (next_ >= events_.size() || cudaEventRecord(events_[next_].get(), stream_) != cudaSuccess) return -1;
    return static_cast<int64_t>(next_++);
  }

  int64_t time_ns(int64_t ticket) override {
    MIRROR_REQUIRE(ticket >= 0 && static_cast<size_t>(ticket) < next_, InvalidArgument, "no device clock mark ",
                   ticket, " (", next_, " were made)");
    const DeviceGuard guard(device_);
    MIRROR_CUDA_CHECK(cudaEventSynchronize(events_[static_cast<size_t>(ticket)].get()));
    float ms = 0;
    MIRROR_CUDA_CHECK(cudaEventElapsedTime(&ms, origin_.get(), events_[static_cast<size_t>(ticket)].get()));
    return origin_host_ns_ + static_cast<int64_t>(static_cast<double>(ms) * 1e6);
  }

  void range_push(const char* name) noexcept override { nvtxRangePushA(name); }
  void range_pop() noexcept override { nvtxRangePop(); }

 private:
  int device_;
  cudaStream_t stream_;
  std::vector<Event> events_;
  Event origin_;
  size_t next_ = 0;
  int64_t origin_host_ns_ = 0;
};

}  // namespace

std::unique_ptr<DeviceClock> CudaBackend::make_device_clock() {
  return std::make_unique<CudaDeviceClock>(device_.index, stream_.get());
}

}  // namespace mirror::cuda
