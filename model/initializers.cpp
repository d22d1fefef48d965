// Variable initializers (see initializers.hpp).
#include "mirror/model/initializers.hpp"

#include <cmath>

#include "mirror/engine/error.hpp"
#include "mirror/engine/random.hpp"

namespace mirror {
namespace {

// Keras's VarianceScaling divides by this constant (the stddev of a unit normal truncated to
// [-2, 2]) so that the truncated draw has the asked-for stddev.
constexpr double kTruncatedStddev = 0.87962566103423978;

// A unit normal truncated to [-2, 2]: Box-Muller on two uniforms, redrawn (with new counters) until
// it falls inside. Element `i` uses counters i * 64 + attempt, so the draw stays order-free.
double truncated_normal(uint64_t seed, uint64_t stream, uint64_t i) {
  for (uint64_t attempt = 0;; attempt += 2) {
    const double u1 = 1.0 - random::uniform(seed, stream, i * 64 + attempt);  // (0, 1]
    const double u2 = random::uniform(seed, stream, i * 64 + attempt + 1);
    const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
    if (std::fabs(z) <= 2.0 || attempt >= 62) return std::fabs(z) <= 2.0 ? z : 0.0;
  }
}

}  // namespace

std::string to_string(Initializer init) {
  switch (init) {
    case Initializer::Zeros: return "zeros";
    case Initializer::Ones: return "ones";
    case Initializer::GlorotUniform: return "glorot_uniform";
    case Initializer::HeNormal: return "he_normal";
    case Initializer::HeUniform: return "he_uniform";
  }
  return "?";
}

void initialize(const VariableSpec& spec, uint64_t seed, uint64_t stream, std::span<float> values) {
  const auto uniform_in = [&](double limit) {
    for (size_t i = 0; i < values.size(); ++i)
      values[i] = static_cast<float>((2.0 * random::uniform(seed, stream, i) - 1.0) * limit);
  };
  switch (spec.init) {
    case Initializer::Zeros:
      for (float& v : values) v = 0.0f;
      return;
    case Initializer::Ones:
      for (float& v : values) v = 1.0f;
      return;
    case Initializer::GlorotUniform:
      MIRROR_REQUIRE(spec.fan_in + spec.fan_out > 0, InvalidArgument, "glorot_uniform needs fans for ", spec.name);
      return uniform_in(std::sqrt(6.0 / static_cast<double>(spec.fan_in + spec.fan_out)));
    case Initializer::HeUniform:
      MIRROR_REQUIRE(spec.fan_in > 0, InvalidArgument, "he_uniform needs a fan-in for ", spec.name);
      return uniform_in(std::sqrt(6.0 / static_cast<double>(spec.fan_in)));
    case Initializer::HeNormal: {
      MIRROR_REQUIRE(spec.fan_in > 0, InvalidArgument, "he_normal needs a fan-in for ", spec.name);
      const double stddev = std::sqrt(2.0 / static_cast<double>(spec.fan_in)) / kTruncatedStddev;
      for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(stddev * truncated_normal(seed, stream, i));
      return;
    }
  }
}

}  // namespace mirror
