// Bucketed gradient all-reduce (see gradient_reducer.hpp).
#include "mirror/strategy/gradient_reducer.hpp"

#include <algorithm>

#include "mirror/engine/error.hpp"
#include "mirror/strategy/strategy.hpp"

namespace mirror {

GradientReducer::GradientReducer(size_t count, size_t bucket_floats, int num_replicas, Tracer* tracer)
    : count_(count), bucket_floats_(bucket_floats), next_(static_cast<size_t>(num_replicas), 0),
      step_(static_cast<size_t>(num_replicas), 0), collective_ns_(static_cast<size_t>(num_replicas), 0), tracer_(tracer) {
  MIRROR_REQUIRE(bucket_floats > 0, InvalidArgument, "gradient buckets must hold at least one float");
  if (!tracer_) return;
  for (size_t b = 0; b < bucket_count(); ++b)
    bucket_names_.push_back(tracer_->name_id(str("all_reduce bucket ", b), "all_reduce"));
  bucket_names_.push_back(tracer_->name_id("all_reduce statistics", "all_reduce"));
}

void GradientReducer::begin(const ReplicaContext& ctx, int64_t step) {
  const auto r = static_cast<size_t>(ctx.replica());
  next_.at(r) = 0;
  step_[r] = step;
  collective_ns_[r] = 0;
}

void GradientReducer::all_reduce(const ReplicaContext& ctx, std::span<float> data, const char* what, size_t name) {
  const auto r = static_cast<size_t>(ctx.replica());
  const int64_t begin_ns = Tracer::now_ns();
  {
    const TraceScope span(tracer_, Strategy::communication_lane(ctx.replica()), tracer_ ? bucket_names_[name] : 0, step_[r]);
    ctx.all_reduce_sum_async(data, what);
  }
  collective_ns_[r] += Tracer::now_ns() - begin_ns;
}

void GradientReducer::start_buckets(const ReplicaContext& ctx, float* grads, size_t ready) {
  size_t& next = next_[static_cast<size_t>(ctx.replica())];
  // Bucket boundaries depend only on count_ and bucket_floats_, so every replica issues the same
  // collectives in the same order. The last bucket may be short.
  while (next < count_ && (next + bucket_floats_ <= ready || ready == count_)) {
    const size_t n = std::min(bucket_floats_, count_ - next);
    all_reduce(ctx, {grads + next, n}, kGradientAllReduce, next / bucket_floats_);
    next += n;
  }
}

void GradientReducer::mark_ready(const ReplicaContext& ctx, float* grads, size_t ready) {
  start_buckets(ctx, grads, std::min(ready, count_));
}

void GradientReducer::finish(const ReplicaContext& ctx, float* grads, std::span<float> extra) {
  start_buckets(ctx, grads, count_);
  if (!extra.empty()) all_reduce(ctx, extra, "step statistics all_reduce", bucket_count());
  const int64_t begin_ns = Tracer::now_ns();
  ctx.wait_all();
  collective_ns_[static_cast<size_t>(ctx.replica())] += Tracer::now_ns() - begin_ns;
}

}  // namespace mirror
