// NCCL bootstrapped over MPI (see nccl_over_mpi.hpp).
#include "mirror/collectives/nccl_over_mpi.hpp"

#include <cstring>
#include <string>

#include "mirror/collectives/mpi_world.hpp"
#include "mirror/engine/cuda/nccl_check.hpp"
#include "mirror/engine/error.hpp"

namespace mirror {

std::unique_ptr<NcclCommunicator> make_nccl_communicator_over_mpi(std::span<Backend* const> backends) {
  MpiWorld& world = MpiWorld::get();
  const int local = static_cast<int>(backends.size());
  world.agree("the number of GPU replicas per worker", std::to_string(local));
  std::string bytes(sizeof(ncclUniqueId), '\0');
  if (world.rank() == 0) {
    ncclUniqueId id;
    MIRROR_NCCL_CHECK(ncclGetUniqueId(&id));
    std::memcpy(bytes.data(), &id, sizeof id);
  }
  bytes = world.broadcast_from_chief(std::move(bytes), "NCCL's unique id");
  ncclUniqueId id;
  std::memcpy(&id, bytes.data(), sizeof id);
  return std::make_unique<NcclCommunicator>(backends, id, world.size() * local, world.rank() * local);
}

}  // namespace mirror
