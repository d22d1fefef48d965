// NCCL across the GPUs of every worker of an MPI job: the chief makes an ncclUniqueId, MPI carries
// it to the other workers, and each worker joins with ncclCommInitRank for each of its GPUs
// (global rank = worker × GPUs per worker + local index). Built with CUDA and MPI.
#pragma once

#include <memory>
#include <span>

#include "mirror/collectives/nccl_communicator.hpp"

namespace mirror {

// `backends` are this worker's GPU replicas, one per GPU; every worker must have as many (checked,
// naming both counts). Collective across workers.
std::unique_ptr<NcclCommunicator> make_nccl_communicator_over_mpi(std::span<Backend* const> backends);

}  // namespace mirror
