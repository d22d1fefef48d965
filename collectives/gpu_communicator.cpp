// make_gpu_communicator for CUDA builds: NCCL when every replica has a GPU of its own, the grouped
// communicator when logical replicas share a GPU.
#include "mirror/collectives/gpu_communicator.hpp"

#include <set>

#include "mirror/collectives/grouped_gpu_communicator.hpp"
#include "mirror/collectives/nccl_communicator.hpp"

namespace mirror {

std::unique_ptr<Communicator> make_gpu_communicator(std::span<Backend* const> backends) {
  std::set<int> devices;
  for (Backend* b : backends) devices.insert(b->device().index);
  if (devices.size() == backends.size()) return std::make_unique<NcclCommunicator>(backends);
  return std::make_unique<GroupedGpuCommunicator>(backends);
}

}  // namespace mirror
