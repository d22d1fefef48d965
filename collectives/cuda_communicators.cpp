// The CUDA module's communicators (collectives/gpu_module.hpp): NCCL when every replica has a GPU
// of its own, the grouped communicator when logical replicas share a GPU, and NCCL across the
// workers of an MPI job when the module is built with MPI.
#include <set>

#include "mirror/collectives/gpu_module.hpp"
#include "mirror/collectives/grouped_gpu_communicator.hpp"
#include "mirror/collectives/nccl_communicator.hpp"
#ifdef MIRROR_WITH_MPI
#include "mirror/collectives/nccl_over_mpi.hpp"
#endif

namespace mirror::cuda {
namespace {

std::unique_ptr<Communicator> make_gpu_communicator(std::span<Backend* const> backends) {
  std::set<int> devices;
  for (Backend* b : backends) devices.insert(b->device().index);
  if (devices.size() == backends.size()) return std::make_unique<NcclCommunicator>(backends);
  return std::make_unique<GroupedGpuCommunicator>(backends);
}

#ifdef MIRROR_WITH_MPI
std::unique_ptr<Communicator> make_gpu_communicator_over_mpi(std::span<Backend* const> backends) {
  return make_nccl_communicator_over_mpi(backends);
}
#endif

}  // namespace
}  // namespace mirror::cuda

// The core finds this by name (gpu::kCollectivesModuleEntry) after loading the module.
extern "C" __attribute__((visibility("default"))) const mirror::CollectivesModule* mirror_cuda_collectives_module() {
  static const mirror::CollectivesModule table{&mirror::cuda::make_gpu_communicator,
#ifdef MIRROR_WITH_MPI
                                               &mirror::cuda::make_gpu_communicator_over_mpi
#else
                                               nullptr
#endif
  };
  return &table;
}
