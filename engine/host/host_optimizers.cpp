// The host's optimizer passes: one loop over the flat buffers per step (split by variable only when
// variables carry their own gradient scale or decay factor), and the sums of squares that clipping
// by norm needs, each variable's summed in order in double, so every replica gets the same factors.
// The per-element rules are engine/elementwise.hpp's, shared with the CUDA kernels; the update's
// loop is a hot_loop (Adam's ran 1.5x slower at the SSE2 baseline than with AVX2),
// instantiated per combination of the step's options so that it has no branch and vectorises.
#include <iterator>

#include "mirror/engine/elementwise.hpp"
#include "mirror/engine/host/host_backend_impl.hpp"

namespace mirror::host {
namespace {

using ew::OptimizerFeatures;

// Elements [begin, end) of one segment (the whole buffer when no segment has its own scale or
// decay factor), the step's options fixed by Features (ew::FixedOptimizerFeatures): no branch is
// left in the loop, so it vectorises for every rule and option. Iteration i touches element i of
// params and grads and i + k count of slots only, so no iteration depends on another (ivdep: GCC
// gives up on proving it for the rules with three slots). A hot_loop (cpu_isa.hpp).
template <OptimizerRule kRule, class Features>
void update_range(const OptimizerStep& step, float scale, float decay, int64_t begin, int64_t end, size_t count,
                  float* params, const float* grads, float* slots) {
  hot_loop([&]() MIRROR_ALWAYS_INLINE {
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC ivdep
#endif
    for (int64_t i = begin; i < end; ++i)
      ew::optimizer_element<kRule>(step, Features{}, scale, decay, size_t(i), count, params, grads, slots);
  });
}

template <OptimizerRule kRule, class Features>
void update(int threads, const OptimizerStep& step, const ParameterSegments& segments, size_t count, float* params,
            const float* grads, float* slots) {
  if (!segments.bounds || (!segments.grad_scales && !segments.decay)) {
    for_chunks(threads, 0, static_cast<int64_t>(count), [&](int64_t begin, int64_t end) {
      update_range<kRule, Features>(step, 1.0f, 1.0f, begin, end, count, params, grads, slots);
    });
    return;
  }
  for (int64_t s = 0; s < segments.count; ++s) {
    const float scale = segments.grad_scales ? segments.grad_scales[s] : 1.0f;
    const float decay = segments.decay ? segments.decay[s] : 1.0f;
    for_chunks(threads, segments.bounds[s], segments.bounds[s + 1], [&](int64_t begin, int64_t end) {
      update_range<kRule, Features>(step, scale, decay, begin, end, count, params, grads, slots);
    });
  }
}

// The features each rule reads; the others are left false, so each rule has one instantiation per
// combination it can tell apart (SGD 16, Adam 8, RMSprop 16).
constexpr bool OptimizerFeatures::*kFeatureMembers[] = {&OptimizerFeatures::clip,     &OptimizerFeatures::decay,
                                                         &OptimizerFeatures::momentum, &OptimizerFeatures::nesterov,
                                                         &OptimizerFeatures::amsgrad,  &OptimizerFeatures::centered};

constexpr bool reads(OptimizerRule rule, bool OptimizerFeatures::*member) {
  if (member == &OptimizerFeatures::clip || member == &OptimizerFeatures::decay) return true;
  switch (rule) {
    case OptimizerRule::SGD: return member == &OptimizerFeatures::momentum || member == &OptimizerFeatures::nesterov;
    case OptimizerRule::Adam: return member == &OptimizerFeatures::amsgrad;
    case OptimizerRule::RMSprop: return member == &OptimizerFeatures::momentum || member == &OptimizerFeatures::centered;
  }
  return false;
}

constexpr OptimizerFeatures with(OptimizerFeatures f, bool OptimizerFeatures::*member) {
  f.*member = true;
  return f;
}

// Calls update<kRule, FixedOptimizerFeatures<f>> with the run-time features f turned into constants
// one member at a time (kNext: the next member of kFeatureMembers to look at).
template <OptimizerRule kRule, OptimizerFeatures kFixed = OptimizerFeatures{}, size_t kNext = 0>
void dispatch(const OptimizerFeatures& f, int threads, const OptimizerStep& step, const ParameterSegments& segments,
              size_t count, float* params, const float* grads, float* slots) {
  if constexpr (kNext == std::size(kFeatureMembers)) {
    update<kRule, ew::FixedOptimizerFeatures<kFixed>>(threads, step, segments, count, params, grads, slots);
  } else {
    constexpr auto member = kFeatureMembers[kNext];
    if constexpr (reads(kRule, member)) {
      if (f.*member)
        return dispatch<kRule, with(kFixed, member), kNext + 1>(f, threads, step, segments, count, params, grads, slots);
    }
    dispatch<kRule, kFixed, kNext + 1>(f, threads, step, segments, count, params, grads, slots);
  }
}

}  // namespace

void HostBackend::optimizer_update(size_t count, const OptimizerStep& step, const ParameterSegments& segments,
                                   const float* guard, float* params, const float* grads, float* slots) {
  if (!ew::step_allowed(guard)) return;
  const OptimizerFeatures f = ew::optimizer_features(step);
  switch (step.rule) {
    case OptimizerRule::SGD:
      return dispatch<OptimizerRule::SGD>(f, threads_, step, segments, count, params, grads, slots);
    case OptimizerRule::Adam:
      return dispatch<OptimizerRule::Adam>(f, threads_, step, segments, count, params, grads, slots);
    case OptimizerRule::RMSprop:
      return dispatch<OptimizerRule::RMSprop>(f, threads_, step, segments, count, params, grads, slots);
  }
}

void HostBackend::clip_scales(const ParameterSegments& segments, const float* grads, float clip_norm, bool global,
                              float* scales) {
  MIRROR_REQUIRE(segments.bounds != nullptr && segments.count > 0, InvalidArgument,
                 "clip_scales needs the variables' bounds");
  if (clip_sums_.size() < static_cast<size_t>(segments.count)) clip_sums_.resize(static_cast<size_t>(segments.count));
  double* sums = clip_sums_.data();  // nothing allocated after the first step
#pragma omp parallel for num_threads(threads_) if (segments.bounds[segments.count] >= kParallelMinCount)
  for (int64_t s = 0; s < segments.count; ++s) {
    double sum = 0.0;
    for (int64_t i = segments.bounds[s]; i < segments.bounds[s + 1]; ++i) sum += double{grads[i]} * double{grads[i]};
    sums[s] = sum;
  }
  double total = 0.0;
  for (int64_t s = 0; s < segments.count; ++s) total += sums[s];
  for (int64_t s = 0; s < segments.count; ++s) scales[s] = ew::clip_factor(global ? total : sums[s], clip_norm);
}

}  // namespace mirror::host
