// Strategies whose replicas run on GPUs.
#pragma once

#include <vector>

#include "mirror/strategy/strategy.hpp"

namespace mirror {

// One replica on one GPU: TensorFlow's `with tf.device('/GPU:0')`.
class OneDeviceStrategy final : public Strategy {
 public:
  explicit OneDeviceStrategy(const Device& device);

 protected:
  std::unique_ptr<Communicator> make_communicator() override;
};

// One replica per GPU of `devices` (or `replicas_per_gpu` logical replicas on each), parameters
// broadcast from replica 0, gradients summed by make_gpu_communicator (NCCL across GPUs).
class MirroredStrategy final : public Strategy {
 public:
  explicit MirroredStrategy(const std::vector<Device>& devices, int replicas_per_gpu = 1);

 protected:
  std::unique_ptr<Communicator> make_communicator() override;
};

}  // namespace mirror
