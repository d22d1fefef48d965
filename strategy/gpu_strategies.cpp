// OneDeviceStrategy and MirroredStrategy: GPU backends from the engine's GPU runtime, connected by
// the GPU communicator.
#include "mirror/strategy/gpu_strategies.hpp"

#include <cstdlib>

#include "mirror/collectives/gpu_communicator.hpp"
#include "mirror/collectives/host_communicator.hpp"
#include "mirror/engine/error.hpp"
#include "mirror/engine/gpu_runtime.hpp"

namespace mirror {
namespace {

std::vector<std::unique_ptr<Backend>> one_backend(const Device& device) {
  MIRROR_REQUIRE(device.kind == DeviceKind::GPU, InvalidArgument, "OneDeviceStrategy needs a GPU, got ", device.name());
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(gpu::make_backend(device));
  return backends;
}

}  // namespace

std::vector<std::unique_ptr<Backend>> gpu_backends(const std::vector<Device>& devices, int replicas_per_gpu,
                                                   const char* strategy) {
  MIRROR_REQUIRE(!devices.empty(), DeviceError, strategy, " needs at least one GPU");
  MIRROR_REQUIRE(replicas_per_gpu >= 1, InvalidArgument, "replicas per GPU must be >= 1, got ", replicas_per_gpu);
  std::vector<std::unique_ptr<Backend>> backends;
  for (const Device& d : devices) {
    MIRROR_REQUIRE(d.kind == DeviceKind::GPU, InvalidArgument, strategy, " runs on GPUs, got ", d.name());
    for (int k = 0; k < replicas_per_gpu; ++k) backends.push_back(gpu::make_backend(d));
  }
  return backends;
}

OneDeviceStrategy::OneDeviceStrategy(const Device& device) : Strategy("one-device", one_backend(device)) { start(); }

std::unique_ptr<Communicator> OneDeviceStrategy::make_communicator() {
  return std::make_unique<HostCommunicator>(1);  // one rank: every collective is a no-op
}

MirroredStrategy::MirroredStrategy(const std::vector<Device>& devices, int replicas_per_gpu)
    : Strategy("mirrored", gpu_backends(devices, replicas_per_gpu, "MirroredStrategy")) {
  start();
}

std::vector<Device> gpus_of_worker(const std::vector<Device>& visible, int local_rank, int local_size) {
  MIRROR_REQUIRE(local_size >= 1 && local_rank >= 0 && local_rank < local_size, InvalidArgument, "worker ", local_rank,
                 " of ", local_size, " on this machine is not a valid place");
  if (local_size == 1 || std::getenv("CUDA_VISIBLE_DEVICES") != nullptr) return visible;
  const size_t share = visible.size() / static_cast<size_t>(local_size);
  MIRROR_REQUIRE(share > 0, DeviceError, local_size, " workers share this machine but ", visible.size(),
                 " GPU(s) are visible: start at most one worker per GPU, or give each worker its own GPUs with "
                 "CUDA_VISIBLE_DEVICES");
  const auto first = visible.begin() + static_cast<std::ptrdiff_t>(share * static_cast<size_t>(local_rank));
  return {first, first + static_cast<std::ptrdiff_t>(share)};
}

std::unique_ptr<Communicator> MirroredStrategy::make_communicator() {
  std::vector<Backend*> backends;
  for (int r = 0; r < num_replicas(); ++r) backends.push_back(&backend(r));
  return make_gpu_communicator(backends);
}

}  // namespace mirror
