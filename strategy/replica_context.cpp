// ReplicaContext (see replica_context.hpp): thin forwarding to the strategy's communicator.
#include "mirror/strategy/replica_context.hpp"

#include "mirror/strategy/strategy.hpp"

namespace mirror {

ReplicaContext::ReplicaContext(Strategy& strategy, int replica) : strategy_(&strategy), replica_(replica) {}

int ReplicaContext::num_replicas() const { return strategy_->num_replicas(); }

Backend& ReplicaContext::backend() const { return strategy_->backend(replica_); }

void ReplicaContext::all_reduce_sum(std::span<float> data, const char* what) const {
  strategy_->communicator().all_reduce_sum(replica_, data, what);
}

void ReplicaContext::all_reduce_sum_async(std::span<float> data, const char* what) const {
  strategy_->communicator().all_reduce_sum_async(replica_, data, what);
}

void ReplicaContext::wait_all() const { strategy_->communicator().wait_all(replica_); }

void ReplicaContext::broadcast(std::span<float> data, int root) const {
  strategy_->communicator().broadcast(replica_, data, root);
}

void ReplicaContext::step_phase(StepPhase phase) const { strategy_->step_phase(replica_, phase); }

}  // namespace mirror
