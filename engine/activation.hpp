// Activation functions that layers apply to their outputs (Keras's `activation=` argument).
#pragma once

#include <string>

namespace mirror {

enum class Activation { Linear, ReLU, Softmax, Sigmoid, Tanh, GELU, SiLU };

// Keras's name: "relu", "gelu", ...
inline std::string to_string(Activation a) {
  switch (a) {
    case Activation::Linear: return "linear";
    case Activation::ReLU: return "relu";
    case Activation::Softmax: return "softmax";
    case Activation::Sigmoid: return "sigmoid";
    case Activation::Tanh: return "tanh";
    case Activation::GELU: return "gelu";
    case Activation::SiLU: return "silu";
  }
  return "?";
}

// Whether the backward pass needs the activation's input x (GELU, SiLU); the others take their
// derivative from the output y alone, so the input need not be kept.
constexpr bool backward_needs_input(Activation a) { return a == Activation::GELU || a == Activation::SiLU; }

// Softmax works on whole rows; the rest element by element.
inline bool is_row_wise(Activation a) { return a == Activation::Softmax; }

}  // namespace mirror
