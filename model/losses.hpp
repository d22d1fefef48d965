// Losses and metrics a model is compiled with.
#pragma once

#include <string>

namespace mirror {

namespace losses {
// Keras's SparseCategoricalCrossentropy on probabilities (from_logits=False): integer labels,
// probabilities clipped to [1e-7, 1 - 1e-7]. Under a strategy, each replica scales its summed loss
// by 1 / global batch size, so the summed gradient is that of the mean over the global batch.
struct SparseCategoricalCrossentropy {
  std::string name() const { return "sparse_categorical_crossentropy"; }
};
}  // namespace losses

namespace metrics {
struct Metric {
  std::string name;
};
// Keras's "accuracy" with integer labels: the share of samples whose largest output is the label.
inline Metric Accuracy() { return {"accuracy"}; }
}  // namespace metrics

}  // namespace mirror
