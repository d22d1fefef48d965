// What the CUDA module gives the collectives layer (see engine/cuda_module.hpp): the communicators
// for GPU replicas, implemented in collectives/cuda_communicators.cpp.
#pragma once

#include <memory>
#include <span>

#include "mirror/collectives/communicator.hpp"
#include "mirror/engine/backend.hpp"

namespace mirror {

// The module's build is checked once, through the engine's table, when it is loaded.
struct CollectivesModule {
  std::unique_ptr<Communicator> (*make_gpu_communicator)(std::span<Backend* const> backends);
  // Null when the module was built without MPI.
  std::unique_ptr<Communicator> (*make_gpu_communicator_over_mpi)(std::span<Backend* const> backends);
};

}  // namespace mirror
