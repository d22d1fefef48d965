// make_gpu_communicator on the core's side: the communicators live in the CUDA module; without it
// (no CUDA in this build, or the module could not be loaded) there are no GPU replicas to connect.
#include "mirror/collectives/gpu_communicator.hpp"

#include <string>

#include "mirror/collectives/gpu_module.hpp"
#include "mirror/engine/cuda_module.hpp"
#include "mirror/engine/error.hpp"

namespace mirror {
namespace {

const CollectivesModule& collectives_module() {
  std::string why_not;
  const auto* module = static_cast<const CollectivesModule*>(gpu::module_table(gpu::kCollectivesModuleEntry, why_not));
  MIRROR_REQUIRE(module != nullptr, DeviceError, "cannot connect GPU replicas: ", why_not);
  return *module;
}

}  // namespace

std::unique_ptr<Communicator> make_gpu_communicator(std::span<Backend* const> backends) {
  return collectives_module().make_gpu_communicator(backends);
}

std::unique_ptr<Communicator> make_gpu_communicator_over_mpi(std::span<Backend* const> backends) {
  const CollectivesModule& module = collectives_module();
  MIRROR_REQUIRE(module.make_gpu_communicator_over_mpi != nullptr, DeviceError,
                 "cannot connect the GPUs of several workers: this build of Mirror has no MPI (install "
                 "libopenmpi-dev and rebuild with -Dmpi=enabled)");
  return module.make_gpu_communicator_over_mpi(backends);
}

}  // namespace mirror
