// make_gpu_communicator for builds without CUDA: there are never GPU replicas to connect.
#include "mirror/collectives/gpu_communicator.hpp"
#include "mirror/engine/error.hpp"

namespace mirror {

std::unique_ptr<Communicator> make_gpu_communicator(std::span<Backend* const>) {
  throw DeviceError("this build of Mirror has no CUDA backend, so it cannot connect GPU replicas");
}

}  // namespace mirror
