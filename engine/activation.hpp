// Activation functions that layers apply to their outputs (Keras's `activation=` argument).
#pragma once

#include <string>

namespace mirror {

enum class Activation { Linear, ReLU, Softmax };

inline std::string to_string(Activation a) {
  switch (a) {
    case Activation::Linear: return "linear";
    case Activation::ReLU: return "relu";
    case Activation::Softmax: return "softmax";
  }
  return "?";
}

}  // namespace mirror
