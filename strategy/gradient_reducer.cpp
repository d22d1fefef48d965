// Bucketed gradient all-reduce (see gradient_reducer.hpp).
#include "mirror/strategy/gradient_reducer.hpp"

#include <algorithm>

#include "mirror/engine/error.hpp"

namespace mirror {

GradientReducer::GradientReducer(size_t count, size_t bucket_floats, int num_replicas)
    : count_(count), bucket_floats_(bucket_floats), next_(static_cast<size_t>(num_replicas), 0) {
  MIRROR_REQUIRE(bucket_floats > 0, InvalidArgument, "gradient buckets must hold at least one float");
}

void GradientReducer::begin(const ReplicaContext& ctx) { next_.at(static_cast<size_t>(ctx.replica())) = 0; }

void GradientReducer::start_buckets(const ReplicaContext& ctx, float* grads, size_t ready) {
  size_t& next = next_[static_cast<size_t>(ctx.replica())];
  // Bucket boundaries depend only on count_ and bucket_floats_, so every replica issues the same
  // collectives in the same order. The last bucket may be short.
  while (next < count_ && (next + bucket_floats_ <= ready || ready == count_)) {
    const size_t n = std::min(bucket_floats_, count_ - next);
    ctx.all_reduce_sum_async({grads + next, n}, kGradientAllReduce);
    next += n;
  }
}

void GradientReducer::mark_ready(const ReplicaContext& ctx, float* grads, size_t ready) {
  start_buckets(ctx, grads, std::min(ready, count_));
}

void GradientReducer::finish(const ReplicaContext& ctx, float* grads, std::span<float> extra) {
  start_buckets(ctx, grads, count_);
  if (!extra.empty()) ctx.all_reduce_sum_async(extra, "step statistics all_reduce");
  ctx.wait_all();
}

}  // namespace mirror
