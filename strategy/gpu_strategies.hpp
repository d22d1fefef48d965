// Strategies whose replicas run on GPUs.
#pragma once

#include <memory>
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

// `replicas_per_gpu` backends on each of `devices` (GPUs), for `strategy` (named in its errors).
std::vector<std::unique_ptr<Backend>> gpu_backends(const std::vector<Device>& devices, int replicas_per_gpu,
                                                   const char* strategy);

// The GPUs a worker of a multi-worker job takes, when `local_size` workers share its machine and
// this one is the `local_rank`-th of them: all of `visible` when it is alone, or when
// CUDA_VISIBLE_DEVICES is set (the launcher or the user gave each worker its own GPUs); otherwise
// an equal share, `visible.size() / local_size` each, in order. Throws DeviceError when there are
// fewer GPUs than workers on the machine.
std::vector<Device> gpus_of_worker(const std::vector<Device>& visible, int local_rank, int local_size);

}  // namespace mirror
