// Sequential::summary(): Keras 3's table of layers, output shapes and parameter counts.
#include <iomanip>
#include <sstream>

#include "engine/error.hpp"
#include "model/sequential.hpp"

namespace mirror {
namespace {

// "54410" -> "54,410"
std::string with_commas(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// Keras's byte counts: "212.54 KB".
std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KB", "MB", "GB"};
  int u = 0;
  while (bytes >= 1024 && u < 3) {
    bytes /= 1024;
    ++u;
  }
  std::ostringstream s;
  s << std::fixed << std::setprecision(2) << bytes << ' ' << units[u];
  return s.str();
}

std::string repeat(const char* piece, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += piece;
  return s;
}

std::string pad_right(const std::string& s, size_t width) { return s + std::string(width > s.size() ? width - s.size() : 0, ' '); }
std::string pad_left(const std::string& s, size_t width) { return std::string(width > s.size() ? width - s.size() : 0, ' ') + s; }

}  // namespace

void Sequential::summary(std::ostream& out) const {
  constexpr size_t kName = 31, kShape = 22, kParams = 13;
  const auto rule = [&](const char* left, const char* fill, const char* mid, const char* right) {
    out << left << repeat(fill, kName + 2) << mid << repeat(fill, kShape + 2) << mid << repeat(fill, kParams + 2) << right << '\n';
  };
  out << "Model: \"" << name_ << "\"\n";
  rule("┏", "━", "┳", "┓");
  out << "┃ " << pad_right("Layer (type)", kName) << " ┃ " << pad_right("Output Shape", kShape) << " ┃ "
      << pad_left("Param #", kParams) << " ┃\n";
  rule("┡", "━", "╇", "┩");
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = *layers_[l];
    int64_t params = 0;
    for (const ParamSpec& spec : layer.param_specs()) params += spec.shape.count();
    std::string shape = "?";
    if (built_) {
      shape = "(None";
      for (int64_t d : layer.output_shape().dims()) shape += ", " + std::to_string(d);
      shape += ")";
    }
    out << "│ " << pad_right(layer.name() + " (" + layer.type() + ")", kName) << " │ " << pad_right(shape, kShape)
        << " │ " << pad_left(built_ ? with_commas(params) : "?", kParams) << " │\n";
    if (l + 1 < layers_.size()) rule("├", "─", "┼", "┤");
  }
  rule("└", "─", "┴", "┘");
  const int64_t total = built_ ? count_params() : 0;
  const std::string size = human_bytes(static_cast<double>(total) * sizeof(float));
  out << " Total params: " << with_commas(total) << " (" << size << ")\n";
  out << " Trainable params: " << with_commas(total) << " (" << size << ")\n";
  out << " Non-trainable params: 0 (0.00 B)\n";
}

}  // namespace mirror
