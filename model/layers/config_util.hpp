// Layer::config() values are JSON text, so the saving code (model/saving/) writes and reads Keras's
// config.json from them while the layers themselves stay free of a JSON library.
#pragma once

#include <array>
#include <charconv>
#include <string>
#include <vector>

#include "mirror/engine/geometry.hpp"

namespace mirror::layer_util {

using ConfigEntries = std::vector<std::pair<std::string, std::string>>;

inline std::string json_string(const std::string& s) { return "\"" + s + "\""; }  // names and enums only: no escaping needed
inline std::string json_bool(bool b) { return b ? "true" : "false"; }
// The shortest text that reads back as the same float (0.99f -> "0.99", as Keras writes it).
inline std::string json_number(float v) {
  std::array<char, 32> buf{};
  const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), v);
  return std::string(buf.data(), end);
}
inline std::string json_list(const std::vector<int64_t>& values) {
  std::string s = "[";
  for (size_t i = 0; i < values.size(); ++i) s += (i ? ", " : "") + std::to_string(values[i]);
  return s + "]";
}
inline std::string json_list(std::array<int64_t, 2> values) { return json_list(std::vector<int64_t>(values.begin(), values.end())); }
inline std::string json_padding(Padding p) { return json_string(p == Padding::Same ? "same" : "valid"); }

}  // namespace mirror::layer_util
