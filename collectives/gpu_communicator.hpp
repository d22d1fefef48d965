// The communicators for replicas on GPUs. They live in the CUDA module (engine/cuda_module.hpp):
// NCCL across GPUs, and a device-local reduction among logical replicas that share one GPU (NCCL
// refuses two ranks on one device). Builds without CUDA, or a module that cannot be loaded, throw
// DeviceError saying why, as such builds never have GPU replicas.
#pragma once

#include <memory>
#include <span>

#include "mirror/collectives/communicator.hpp"
#include "mirror/engine/backend.hpp"

namespace mirror {

// `backends[r]` is replica r's GPU backend; replicas on the same device are adjacent.
std::unique_ptr<Communicator> make_gpu_communicator(std::span<Backend* const> backends);

// One NCCL communicator across the GPUs of every worker of an MPI job (`backends` are this
// worker's, one per GPU, as many on every worker), bootstrapped over MPI. Collective across
// workers; needs a build with MPI.
std::unique_ptr<Communicator> make_gpu_communicator_over_mpi(std::span<Backend* const> backends);

}  // namespace mirror
