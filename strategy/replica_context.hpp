// ReplicaContext: what one replica's step sees of its strategy -- its index, its backend, and the
// collectives that join it to the other replicas. Layers reach the strategy only through it (a
// synchronized batch normalization all-reduces its moments here); the model never holds a
// communicator.
//
// Who waits for what: a collective is queued on the replica's stream after the work already
// queued there, and its result is ready for the work queued after it (on the host: when the call
// returns). Every replica must issue the same collectives in the same order.
#pragma once

#include <span>

#include "mirror/engine/backend.hpp"

namespace mirror {

class Strategy;
enum class StepPhase;

class ReplicaContext {
 public:
  ReplicaContext(Strategy& strategy, int replica);

  int replica() const { return replica_; }
  int num_replicas() const;
  Backend& backend() const;

  // data = the sum of every replica's data, in place (bitwise identical on every replica).
  void all_reduce_sum(std::span<float> data, const char* what) const;
  // Starts all_reduce_sum and may return before it is done (on GPUs it runs on a communication
  // stream); `data` must not be touched until wait_all() returns. On the host it is done at once.
  void all_reduce_sum_async(std::span<float> data, const char* what) const;
  // Orders the replica's stream after every all_reduce_sum_async it issued, and raises their errors.
  void wait_all() const;
  // data = replica `root`'s data on every replica.
  void broadcast(std::span<float> data, int root = 0) const;
  // Tells the strategy that this replica's step reached `phase` (Strategy::step_phase).
  void step_phase(StepPhase phase) const;

 private:
  Strategy* strategy_;
  int replica_;
};

}  // namespace mirror
