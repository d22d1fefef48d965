// Keras's variable initializers on the host, driven by the counter-based generator, so a value
// depends only on (seed, stream, element): the same weights for any device or replica count.
#pragma once

#include <cstdint>
#include <span>

#include "mirror/model/layer.hpp"

namespace mirror {

// Fills `values` as Keras's initializer `spec.init` would for a variable of spec.shape:
// zeros, ones, glorot_uniform (limit sqrt(6 / (fan_in + fan_out))), he_uniform (limit
// sqrt(6 / fan_in)), he_normal (a normal of stddev sqrt(2 / fan_in) truncated at two standard
// deviations, scaled as Keras's VarianceScaling does so that the result has that stddev).
void initialize(const VariableSpec& spec, uint64_t seed, uint64_t stream, std::span<float> values);

}  // namespace mirror
