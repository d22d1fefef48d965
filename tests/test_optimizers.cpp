// Keras 3's optimizers and learning-rate schedules against independent references: the parameters
// after each of four steps of every rule and option (clipping, weight decay and its exclusions,
// amsgrad, Nesterov, centered RMSprop), and each schedule at chosen iterations, as computed by
// tests/reference/keras_optimizers.py with NumPy (tests/reference/keras_optimizers.inc); and the host
// backend's vectorised update loops against the scalar per-element rule, bit for bit.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "mirror/engine/elementwise.hpp"
#include "mirror/engine/host/host_backend.hpp"
#include "mirror/mirror.hpp"
#include "isa_test_util.hpp"
#include "reference/keras_optimizers.inc"
#include "test_util.hpp"

namespace mirror {
namespace {

namespace ref = keras_reference;

// Runs ref::kOptimizerSteps updates of `optimizer` on the reference problem through the host
// backend and returns the parameters after each step (steps x count).
std::vector<float> run_reference_problem(Optimizer& optimizer) {
  auto backend = make_host_backend(1);
  constexpr size_t count = ref::kOptimizerCount;
  constexpr int64_t variables = std::size(ref::kVariableNames);
  std::vector<float> params(ref::kInitialParams, ref::kInitialParams + count);
  std::vector<float> slots(std::max<size_t>(1, size_t(optimizer.slot_count()) * count), 0.0f);
  std::vector<float> scales(variables), guard = {0.0f};
  const std::vector<std::string> names(std::begin(ref::kVariableNames), std::end(ref::kVariableNames));
  const std::vector<float> decay = optimizer.decay_factors(names);
  std::vector<float> history;
  for (int t = 0; t < ref::kOptimizerSteps; ++t) {
    optimizer.apply(*backend, t, optimizer.learning_rate(t),
                    {.count = count,
                     .params = params.data(),
                     .grads = ref::kGradients + t * count,
                     .slots = slots.data(),
                     .guard = guard.data(),
                     .segments = {.count = variables,
                                  .bounds = ref::kVariableBounds,
                                  .decay = decay.empty() ? nullptr : decay.data()},
                     .scales = scales.data()});
    history.insert(history.end(), params.begin(), params.end());
  }
  return history;
}

template <size_t N>
void expect_matches(const char* name, OptimizerPtr optimizer, const double (&expected)[N]) {
  SCOPED_TRACE(name);
  const std::vector<float> got = run_reference_problem(*optimizer);
  ASSERT_EQ(got.size(), N);
  int shown = 0;
  for (size_t i = 0; i < N; ++i) {
    const double tolerance = 2e-6 + 2e-5 * std::abs(expected[i]);
    if (std::abs(got[i] - expected[i]) > tolerance && shown++ < 5)
      ADD_FAILURE() << "step " << i / ref::kOptimizerCount + 1 << " element " << i % ref::kOptimizerCount << ": got "
                    << got[i] << ", NumPy " << expected[i];
  }
}

TEST(Optimizers, SgdMatchesKeras) {
  expect_matches("sgd", optimizers::SGD({.learning_rate = 0.1f}), ref::kSgdParams);
  expect_matches("momentum", optimizers::SGD({.learning_rate = 0.1f, .momentum = 0.9f}), ref::kSgdMomentumParams);
  expect_matches("nesterov", optimizers::SGD({.learning_rate = 0.1f, .momentum = 0.9f, .nesterov = true}),
                 ref::kSgdNesterovParams);
  expect_matches("weight decay",
                 optimizers::SGD({.learning_rate = 0.1f, .momentum = 0.5f, .common = {.weight_decay = 0.05f}}),
                 ref::kSgdWeightDecayParams);
  expect_matches("clipnorm", optimizers::SGD({.learning_rate = 0.1f, .common = {.clipnorm = 0.5f}}), ref::kSgdClipnormParams);
  expect_matches("clipvalue", optimizers::SGD({.learning_rate = 0.1f, .common = {.clipvalue = 0.3f}}),
                 ref::kSgdClipvalueParams);
}

TEST(Optimizers, AdamAndAdamWMatchKeras) {
  expect_matches("adam", optimizers::Adam({.learning_rate = 0.01f}), ref::kAdamParams);
  expect_matches("amsgrad", optimizers::Adam({.learning_rate = 0.01f, .amsgrad = true}), ref::kAdamAmsgradParams);
  expect_matches("global clipnorm", optimizers::Adam({.learning_rate = 0.01f, .common = {.global_clipnorm = 0.7f}}),
                 ref::kAdamGlobalClipnormParams);
  expect_matches("adamw", optimizers::AdamW({.learning_rate = 0.01f}), ref::kAdamWParams);
  expect_matches("adamw excluding bias and gamma",
                 optimizers::AdamW({.learning_rate = 0.01f, .weight_decay = 0.1f, .amsgrad = true,
                                    .common = {.exclude_from_weight_decay = {"bias", "^gamma$"}}}),
                 ref::kAdamWExcludedParams);
}

TEST(Optimizers, RmspropMatchesKeras) {
  expect_matches("rmsprop", optimizers::RMSprop({.learning_rate = 0.01f}), ref::kRmspropParams);
  expect_matches("centered with momentum and clipnorm",
                 optimizers::RMSprop({.learning_rate = 0.01f, .rho = 0.8f, .momentum = 0.5f, .centered = true,
                                      .common = {.clipnorm = 1.0f}}),
                 ref::kRmspropCenteredParams);
}

TEST(Optimizers, KerasDefaultsAndSlots) {
  EXPECT_FLOAT_EQ(optimizers::SGD()->learning_rate(0), 0.01f);
  EXPECT_FLOAT_EQ(optimizers::Adam()->learning_rate(0), 0.001f);
  EXPECT_EQ(optimizers::SGD()->slot_count(), 0);
  EXPECT_EQ(optimizers::SGD({.momentum = 0.9f})->slot_count(), 1);
  EXPECT_EQ(optimizers::Adam()->slot_count(), 2);
  EXPECT_EQ(optimizers::Adam({.amsgrad = true})->slot_count(), 3);
  EXPECT_EQ(optimizers::RMSprop()->slot_count(), 1);
  EXPECT_EQ(optimizers::RMSprop({.momentum = 0.9f, .centered = true})->slot_count(), 3);
  EXPECT_EQ(optimizers::AdamW()->common().weight_decay, 0.004f);
  EXPECT_EQ(optimizers::AdamW()->name(), "adamw");
}

TEST(Optimizers, RefusesWhatKerasRefuses) {
  EXPECT_THROW(optimizers::Adam({.common = {.clipnorm = 1.0f, .global_clipnorm = 1.0f}}), InvalidArgument);
  EXPECT_THROW(optimizers::SGD({.common = {.clipnorm = 1.0f, .clipvalue = 1.0f}}), InvalidArgument);
  EXPECT_THROW(optimizers::RMSprop({.rho = 1.0f}), InvalidArgument);
  EXPECT_THROW(optimizers::AdamW({.weight_decay = 0.0f}), InvalidArgument);
  EXPECT_THROW(optimizers::AdamW({.common = {.exclude_from_weight_decay = {"("}}}), InvalidArgument);
  auto scheduled = optimizers::SGD({.learning_rate = schedules::ExponentialDecay(0.1f, 10, 0.5f)});
  EXPECT_THROW(scheduled->set_learning_rate(0.01f), InvalidArgument);
  auto fixed = optimizers::SGD();
  fixed->set_learning_rate(0.5f);
  EXPECT_FLOAT_EQ(fixed->learning_rate(1000), 0.5f);
}

// Each constant out of its range, NaN and infinity included, is refused with a message naming the
// optimizer, the constant and the value: a constant that makes the update a no-op (Adam's epsilon
// = inf) or NaN must not be found only after a run that learned nothing.
TEST(Optimizers, RefusesConstantsOutOfRangeNamingThem) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    const char* expected;  // in the message
    std::function<OptimizerPtr()> make;
  };
  const std::vector<Case> cases = {
      {"Adam's epsilon must be positive and finite, got inf", [&] { return optimizers::Adam({.epsilon = inf}); }},
      {"Adam's epsilon", [&] { return optimizers::Adam({.epsilon = 0.0f}); }},
      {"AdamW's epsilon", [&] { return optimizers::AdamW({.epsilon = nan}); }},
      {"RMSprop's epsilon", [&] { return optimizers::RMSprop({.epsilon = -1e-7f}); }},
      {"SGD's learning rate must be positive and finite, got -0.1", [&] { return optimizers::SGD({.learning_rate = -0.1f}); }},
      {"Adam's learning rate", [&] { return optimizers::Adam({.learning_rate = nan}); }},
      {"RMSprop's learning rate", [&] { return optimizers::RMSprop({.learning_rate = inf}); }},
      {"Adam's beta_1 and beta_2 must be in [0, 1), got 1 and", [&] { return optimizers::Adam({.beta_1 = 1.0f}); }},
      {"Adam's beta_1 and beta_2", [&] { return optimizers::Adam({.beta_2 = -0.5f}); }},
      {"AdamW's beta_1 and beta_2", [&] { return optimizers::AdamW({.beta_2 = nan}); }},
      {"RMSprop's rho must be in [0, 1), got 1.5", [&] { return optimizers::RMSprop({.rho = 1.5f}); }},
      {"RMSprop's rho", [&] { return optimizers::RMSprop({.rho = nan}); }},
      {"SGD's momentum must be in [0, 1], got -0.5", [&] { return optimizers::SGD({.momentum = -0.5f}); }},
      {"SGD's momentum", [&] { return optimizers::SGD({.momentum = nan}); }},
      {"RMSprop's momentum must be in [0, 1], got 2", [&] { return optimizers::RMSprop({.momentum = 2.0f}); }},
      {"SGD's weight_decay must be >= 0 and finite", [&] { return optimizers::SGD({.common = {.weight_decay = -0.1f}}); }},
      {"AdamW's weight_decay", [&] { return optimizers::AdamW({.weight_decay = inf}); }},
      {"AdamW needs a positive weight_decay", [&] { return optimizers::AdamW({.weight_decay = -1.0f}); }},
      {"Adam's clipnorm must be >= 0", [&] { return optimizers::Adam({.common = {.clipnorm = -1.0f}}); }},
      {"Adam's clipvalue", [&] { return optimizers::Adam({.common = {.clipvalue = nan}}); }},
      {"SGD's global_clipnorm", [&] { return optimizers::SGD({.common = {.global_clipnorm = inf}}); }},
  };
  for (const Case& c : cases) {
    const std::string m = testing::message_of<InvalidArgument>([&] { c.make(); });
    EXPECT_NE(m.find(c.expected), std::string::npos) << "expected '" << c.expected << "' in: " << m;
  }
  auto fixed = optimizers::Adam();
  for (float bad : {-1.0f, nan, inf}) EXPECT_THROW(fixed->set_learning_rate(bad), InvalidArgument);
}

TEST(Optimizers, ANonFiniteLossSkipsEveryRule) {
  auto backend = make_host_backend(1);
  for (OptimizerPtr o : {optimizers::SGD({.momentum = 0.9f, .nesterov = true}), optimizers::Adam({.amsgrad = true}),
                         optimizers::RMSprop({.momentum = 0.5f, .centered = true, .common = {.clipnorm = 1.0f}})}) {
    SCOPED_TRACE(o->name());
    std::vector<float> params = {1.0f, 2.0f}, grads = {0.5f, -0.5f}, slots(size_t(o->slot_count()) * 2, 0.25f);
    const std::vector<float> params0 = params, slots0 = slots;
    const std::vector<float> guard = {NAN};
    const int64_t bounds[] = {0, 2};
    float scale = 0;
    o->apply(*backend, 0, 0.1f, {.count = 2, .params = params.data(), .grads = grads.data(), .slots = slots.data(),
                                 .guard = guard.data(), .segments = {.count = 1, .bounds = bounds}, .scales = &scale});
    EXPECT_EQ(params, params0);
    EXPECT_EQ(slots, slots0);
  }
}

// SGD without momentum keeps no slot, so a model hands it no slot buffer (slots == null): neither the
// host's loops nor the scalar rule may form a pointer from it (UBSan's run of this test checks that
// no offset is applied to the null pointer). Plain p -= lr g, then with clipping and weight decay.
TEST(Optimizers, SgdWithoutMomentumTakesNoSlots) {
  auto backend = make_host_backend(1);
  const OptimizerStep plain{.rule = OptimizerRule::SGD, .learning_rate = 0.1f};
  OptimizerStep clipped = plain;
  clipped.clipvalue = 0.3f;
  clipped.weight_decay = 0.5f;
  for (const OptimizerStep& step : {plain, clipped}) {
    ASSERT_EQ(optimizer_slot_count(step), 0);
    constexpr size_t count = 1000;
    std::vector<float> params(count), grads(count);
    for (size_t i = 0; i < count; ++i) {
      params[i] = 1.0f + float(i % 7);
      grads[i] = 0.5f - float(i % 3) * 0.25f;
    }
    std::vector<float> expected = params;
    for (size_t i = 0; i < count; ++i)
      ew::optimizer_element<OptimizerRule::SGD>(step, 1.0f, 1.0f, i, count, expected.data(), grads.data(), nullptr);
    const std::vector<float> guard = {0.0f};
    backend->optimizer_update(count, step, {}, guard.data(), params.data(), grads.data(), nullptr);
    EXPECT_EQ(params, expected);
  }
  EXPECT_FLOAT_EQ(1.0f - 0.1f * 0.5f, [&] {
    float p = 1.0f;
    const float g = 0.5f;
    ew::optimizer_element<OptimizerRule::SGD>(plain, 1.0f, 1.0f, 0, 1, &p, &g, nullptr);
    return p;
  }());
}

// max_of and min_of, which the optimizer's rules use in place of fmaxf and fminf so that the host's
// loop vectorises, give fmaxf's and fminf's bits for every pair of special values.
TEST(Optimizers, MaxOfAndMinOfEqualFmaxfAndFminf) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const float values[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, 1e-40f, -1e-40f, 3e38f, inf, -inf, nan, -nan};
  // Through pointers the compiler cannot see through: its own folding of fmaxf on constants may
  // pick another zero or NaN than the C library does at run time.
  float (*volatile fmax_fn)(float, float) = fmaxf;
  float (*volatile fmin_fn)(float, float) = fminf;
  for (float a : values)
    for (float b : values) {
      if (std::isnan(a) && std::isnan(b)) {
        // C leaves open which NaN fmaxf returns then (glibc gives the first, clang's folding a
        // canonical one); max_of's own choice is fixed, and the same in every variant (test_host_isa).
        EXPECT_TRUE(std::isnan(ew::max_of(a, b)) && std::isnan(ew::min_of(a, b))) << a << ", " << b;
        continue;
      }
      EXPECT_EQ(std::bit_cast<uint32_t>(ew::max_of(a, b)), std::bit_cast<uint32_t>(fmax_fn(a, b))) << a << ", " << b;
      EXPECT_EQ(std::bit_cast<uint32_t>(ew::min_of(a, b)), std::bit_cast<uint32_t>(fmin_fn(a, b))) << a << ", " << b;
    }
}

// Every rule with every combination of the options that change its code goes through the host
// backend's loops (vectorised, one instantiation per combination) and through a plain scalar loop
// over ew::optimizer_element reading the options at run time; the two must agree to the bit. The
// length is odd, so the vector loops' remainders run; the gradients hold NaN, infinities, signed
// zeros and values beyond clipvalue; the second pass gives each of two variables its own gradient
// scale and decay factor (the segmented path). Under every variant of the host loops this CPU runs
// (engine/host/cpu_isa.hpp): none may contract a*b+c into a fused multiply-add.
TEST(Optimizers, HostLoopsEqualTheScalarRuleBitwise) {
  constexpr size_t count = 1037;
  const float inf = std::numeric_limits<float>::infinity();
  auto backend = make_host_backend(2);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> params0(count), grads(count), slots0(3 * count);
  for (float& p : params0) p = uniform(rng);
  for (float& g : grads) g = 2.0f * uniform(rng);
  for (size_t i = 0; i < 3 * count; ++i) slots0[i] = i % 3 == 0 ? uniform(rng) : std::abs(uniform(rng));
  grads[5] = std::numeric_limits<float>::quiet_NaN();
  grads[17] = inf;
  grads[18] = -inf;
  grads[40] = 0.0f;
  grads[41] = -0.0f;
  const int64_t bounds[] = {0, 500, int64_t{count}};
  const float grad_scales[] = {0.75f, 1.25f}, decay[] = {1.0f, 0.0f};
  const ParameterSegments segmented = {.count = 2, .bounds = bounds, .grad_scales = grad_scales, .decay = decay};

  const auto bits_equal = [](float a, float b) { return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b); };
  testing::for_each_runnable_isa([&](host::CpuIsa) {
    for (OptimizerRule rule : {OptimizerRule::SGD, OptimizerRule::Adam, OptimizerRule::RMSprop}) {
      for (int options = 0; options < 16; ++options) {
        OptimizerStep step{.rule = rule, .learning_rate = 0.01f, .alpha = 0.003f, .beta1 = 0.9f, .beta2 = 0.95f};
        step.clipvalue = options & 1 ? 0.5f : 0.0f;
        step.weight_decay = options & 2 ? 0.1f : 0.0f;
        if (rule != OptimizerRule::Adam) step.momentum = options & 4 ? 0.9f : 0.0f;
        step.nesterov = rule == OptimizerRule::SGD && (options & 8);
        step.amsgrad = rule == OptimizerRule::Adam && (options & 4);
        step.centered = rule == OptimizerRule::RMSprop && (options & 8);
        if (rule == OptimizerRule::Adam && options >= 8) continue;  // Adam has three options
        for (const ParameterSegments& segments : {ParameterSegments{}, segmented}) {
          SCOPED_TRACE(::testing::Message() << "rule " << static_cast<int>(rule) << ", options " << options
                                            << (segments.bounds ? ", two variables" : ""));
          std::vector<float> params = params0, slots = slots0, want_params = params0, want_slots = slots0;
          const float guard = 1.0f;
          for (int t = 0; t < 3; ++t) {
            backend->optimizer_update(count, step, segments, &guard, params.data(), grads.data(), slots.data());
            for (size_t i = 0; i < count; ++i) {
              const int64_t s = segments.bounds && int64_t(i) >= bounds[1] ? 1 : 0;
              const float scale = segments.grad_scales ? grad_scales[s] : 1.0f;
              const float factor = segments.decay ? decay[s] : 1.0f;
              float* p = want_params.data();
              float* sl = want_slots.data();
              switch (rule) {
                case OptimizerRule::SGD:
                  ew::optimizer_element<OptimizerRule::SGD>(step, scale, factor, i, count, p, grads.data(), sl);
                  break;
                case OptimizerRule::Adam:
                  ew::optimizer_element<OptimizerRule::Adam>(step, scale, factor, i, count, p, grads.data(), sl);
                  break;
                case OptimizerRule::RMSprop:
                  ew::optimizer_element<OptimizerRule::RMSprop>(step, scale, factor, i, count, p, grads.data(), sl);
                  break;
              }
            }
          }
          int shown = 0;
          for (size_t i = 0; i < count; ++i)
            if (!bits_equal(params[i], want_params[i]) && shown++ < 5)
              ADD_FAILURE() << "param " << i << ": host " << params[i] << ", scalar rule " << want_params[i];
          for (size_t i = 0; i < 3 * count; ++i)
            if (!bits_equal(slots[i], want_slots[i]) && shown++ < 5)
              ADD_FAILURE() << "slot " << i << ": host " << slots[i] << ", scalar rule " << want_slots[i];
        }
      }
    }
  });
}

template <size_t N>
void expect_schedule(const char* name, const LearningRateSchedule& schedule, const double (&expected)[N]) {
  SCOPED_TRACE(name);
  static_assert(N == std::size(ref::kScheduleIterations));
  for (size_t k = 0; k < N; ++k)
    EXPECT_NEAR(schedule(ref::kScheduleIterations[k]), expected[k], 1e-7 + 1e-6 * std::abs(expected[k]))
        << "iteration " << ref::kScheduleIterations[k];
}

TEST(Schedules, MatchKerasAtChosenIterations) {
  expect_schedule("exponential", *schedules::ExponentialDecay(0.1f, 10, 0.5f), ref::kExponentialRates);
  expect_schedule("staircase", *schedules::ExponentialDecay(0.1f, 10, 0.5f, true), ref::kExponentialStaircaseRates);
  expect_schedule("piecewise", *schedules::PiecewiseConstantDecay({10, 100}, {1.0f, 0.5f, 0.1f}), ref::kPiecewiseRates);
  expect_schedule("cosine", *schedules::CosineDecay(0.1f, 100, {.alpha = 0.1f}), ref::kCosineRates);
  expect_schedule("cosine warm-up", *schedules::CosineDecay(0.0f, 90, {.warmup_target = 0.2f, .warmup_steps = 10}),
                  ref::kCosineWarmupRates);
  expect_schedule("polynomial", *schedules::PolynomialDecay(0.1f, 100, {.power = 2.0f}), ref::kPolynomialRates);
  expect_schedule("polynomial cycle", *schedules::PolynomialDecay(0.1f, 100, {.end_learning_rate = 0.01f, .cycle = true}),
                  ref::kPolynomialCycleRates);
}

TEST(Schedules, WarmupBoundaryInClosedForm) {
  // Linear from 0 to 0.2 over 10 steps, then the cosine from 0.2: 0.18 at step 9, 0.2 at step 10.
  const auto s = schedules::CosineDecay(0.0f, 90, {.warmup_target = 0.2f, .warmup_steps = 10});
  EXPECT_NEAR((*s)(9), 0.18, 1e-7);
  EXPECT_NEAR((*s)(10), 0.2, 1e-7);
  EXPECT_NEAR((*s)(55), 0.1, 1e-7);  // half-way through the decay
  EXPECT_NEAR((*s)(100), 0.0, 1e-7);
  const auto user = schedules::Lambda([](int64_t i) { return 1.0f / float(i + 1); });
  EXPECT_FLOAT_EQ((*user)(3), 0.25f);
  EXPECT_THROW(schedules::CosineDecay(0.1f, 10, {.warmup_steps = 5}), InvalidArgument);
  EXPECT_THROW(schedules::PiecewiseConstantDecay({10}, {1.0f}), InvalidArgument);
}

// A schedule steps on the optimizer's iteration, once per global batch, whatever the replica count:
// fit passes it the rate of iteration `i` for the i-th batch.
TEST(Schedules, StepOnOptimizerIterations) {
  const ImageSet data = data::synthetic_images(64, 6, 6, 3);
  for (int replicas : {1, 3}) {
    HostStrategy strategy(replicas, 1);
    Sequential model({layers::Flatten(Shape{6, 6, 1}), layers::Dense(3, Activation::Softmax)});
    std::vector<int64_t> seen;
    model.compile(strategy, optimizers::SGD({.learning_rate = schedules::Lambda([&](int64_t i) {
                                               seen.push_back(i);
                                               return 0.01f;
                                             })}));
    const History h = model.fit(data, {.epochs = 2, .batch_size = 16, .verbose = 0});
    // One call per step (iterations 0-7), and History's learning_rate at each epoch's end (4, 8).
    EXPECT_EQ(seen, (std::vector<int64_t>{0, 1, 2, 3, 4, 4, 5, 6, 7, 8})) << replicas << " replicas";
    EXPECT_DOUBLE_EQ(h.epochs[1].get("learning_rate"), 0.01f);
    EXPECT_EQ(model.iterations(), 8);
  }
}

}  // namespace
}  // namespace mirror
