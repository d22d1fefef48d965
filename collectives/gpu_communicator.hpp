// The communicator for replicas on GPUs. CUDA builds implement it (NCCL across GPUs; a
// device-local reduction among logical replicas that share one GPU, since NCCL refuses two ranks
// on one device); other builds throw DeviceError, as they never have GPU replicas.
#pragma once

#include <memory>
#include <span>

#include "mirror/collectives/communicator.hpp"
#include "mirror/engine/backend.hpp"

namespace mirror {

// `backends[r]` is replica r's GPU backend; replicas on the same device are adjacent.
std::unique_ptr<Communicator> make_gpu_communicator(std::span<Backend* const> backends);

}  // namespace mirror
