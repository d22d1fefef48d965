// GradientReducer: sums every replica's flat gradient buffer across the replicas in buckets, each
// bucket's all-reduce started as soon as backward has finished writing it, so the reduction of
// the last layers' gradients overlaps the backward pass of the first ones (PyTorch DDP's reducer).
// The model lays its gradients out so that backward completes the buffer front to back and says
// how far it has got; the reducer decides where buckets start and end and issues the collectives.
//
// Who waits for what: mark_ready() only starts all-reduces (on GPUs they run on a communication
// stream, ordered after the work already on the replica's stream); finish() orders the replica's
// stream after all of them, so the optimizer queued next sees the sums. Each replica calls these
// from its own worker thread; replicas never share state here.
//
// With a tracer, each bucket's all-reduce is a span on the replica's communication lane, from its
// launch to its completion (on the host, the call; GPU spans from CUDA events are still to come).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "mirror/engine/trace.hpp"
#include "mirror/strategy/replica_context.hpp"

namespace mirror {

// The `what` of every gradient bucket's all-reduce, by which a communicator's decorator can tell
// them from the other collectives of a step.
inline constexpr const char* kGradientAllReduce = "gradient all_reduce";

class GradientReducer {
 public:
  // Buffers of `count` floats on every replica, reduced in buckets of `bucket_floats` (> 0).
  // `tracer` (may be null) names the buckets' spans now, and gets them while it is on.
  GradientReducer(size_t count, size_t bucket_floats, int num_replicas, Tracer* tracer = nullptr);

  size_t count() const { return count_; }
  size_t bucket_floats() const { return bucket_floats_; }
  size_t bucket_count() const { return (count_ + bucket_floats_ - 1) / bucket_floats_; }

  // Starts step `step` (the spans' label) on replica `ctx.replica()`.
  void begin(const ReplicaContext& ctx, int64_t step = 0);
  // Gradients [0, ready) of `grads` are final: starts the all-reduce of every bucket they complete.
  void mark_ready(const ReplicaContext& ctx, float* grads, size_t ready);
  // Starts every bucket not yet started, all-reduces `extra` (e.g. the step's loss and metric sums)
  // with them, and waits for all of them.
  void finish(const ReplicaContext& ctx, float* grads, std::span<float> extra);

  // Nanoseconds replica `replica`'s step since begin() spent in its collectives' calls (host
  // clock: on a GPU, launching them and waiting in wait_all). Read after the step, from any thread.
  int64_t collective_ns(int replica) const { return collective_ns_[static_cast<size_t>(replica)]; }

 private:
  void start_buckets(const ReplicaContext& ctx, float* grads, size_t ready);
  // Starts one all-reduce; `name` indexes bucket_names_.
  void all_reduce(const ReplicaContext& ctx, std::span<float> data, const char* what, size_t name);

  size_t count_;
  size_t bucket_floats_;
  std::vector<size_t> next_;  // per replica: gradients [0, next_) have their all-reduce started
  std::vector<int64_t> step_;  // per replica: the step in progress
  std::vector<int64_t> collective_ns_;  // per replica: time in collectives since begin()
  Tracer* tracer_;
  std::vector<int> bucket_names_;  // per bucket, then the statistics' all-reduce: tracer_'s name ids
};

}  // namespace mirror
