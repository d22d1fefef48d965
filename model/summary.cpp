// Model::summary(): Keras 3's table of layers, output shapes and parameter counts (with an input
// row and a "Connected to" column for a functional model, as Keras prints them).
#include <iomanip>
#include <map>
#include <sstream>

#include "mirror/engine/error.hpp"
#include "mirror/model/model.hpp"
#include "mirror/model/plan.hpp"

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

std::string batch_shape(const Shape& shape) {
  std::string s = "(None";
  for (int64_t d : shape.dims()) s += ", " + std::to_string(d);
  return s + ")";
}

struct Row {
  std::string name, shape, params, connected;
};

}  // namespace

void Model::summary(std::ostream& out) const {
  std::vector<Row> rows;
  if (is_sequential() || !built()) {
    for (const LayerPtr& layer : layers()) {
      int64_t params = 0;
      if (layer->built())
        for (const VariableSpec& v : layer->variables()) params += v.shape.count();
      rows.push_back({layer->name() + " (" + layer->type() + ")", layer->built() ? batch_shape(layer->output_shape()) : "?",
                      layer->built() ? with_commas(params) : "?", ""});
    }
  } else {
    std::map<const Node*, std::string> names;
    for (const Node* node : ordered_nodes(input_, output_)) {
      if (!node->layer) {
        names[node] = node->input_name;
        rows.push_back({node->input_name + " (InputLayer)", batch_shape(node->shape), "0", "-"});
        continue;
      }
      names[node] = node->layer->name();
      int64_t params = 0;
      for (const VariableSpec& v : node->layer->variables()) params += v.shape.count();
      std::string connected;
      for (const Tensor& t : node->inputs) connected += (connected.empty() ? "" : ", ") + names[t.node().get()] + "[0][0]";
      rows.push_back({node->layer->name() + " (" + node->layer->type() + ")", batch_shape(node->shape), with_commas(params),
                      connected});
    }
  }
  const bool connected = !is_sequential() && built();
  const size_t kName = 31, kShape = 22, kParams = 13, kConnected = 24;
  const auto rule = [&](const char* left, const char* fill, const char* mid, const char* right) {
    out << left << repeat(fill, kName + 2) << mid << repeat(fill, kShape + 2) << mid << repeat(fill, kParams + 2);
    if (connected) out << mid << repeat(fill, kConnected + 2);
    out << right << '\n';
  };
  out << "Model: \"" << name_ << "\"\n";
  rule("┏", "━", "┳", "┓");
  out << "┃ " << pad_right("Layer (type)", kName) << " ┃ " << pad_right("Output Shape", kShape) << " ┃ "
      << pad_left("Param #", kParams) << (connected ? " ┃ " + pad_right("Connected to", kConnected) : std::string()) << " ┃\n";
  rule("┡", "━", "╇", "┩");
  for (size_t r = 0; r < rows.size(); ++r) {
    out << "│ " << pad_right(rows[r].name, kName) << " │ " << pad_right(rows[r].shape, kShape) << " │ "
        << pad_left(rows[r].params, kParams) << (connected ? " │ " + pad_right(rows[r].connected, kConnected) : std::string())
        << " │\n";
    if (r + 1 < rows.size()) rule("├", "─", "┼", "┤");
  }
  rule("└", "─", "┴", "┘");
  const int64_t total = count_params(), trainable = count_trainable_params();
  const auto bytes = [](int64_t n) { return human_bytes(static_cast<double>(n) * sizeof(float)); };
  out << " Total params: " << with_commas(total) << " (" << bytes(total) << ")\n";
  out << " Trainable params: " << with_commas(trainable) << " (" << bytes(trainable) << ")\n";
  out << " Non-trainable params: " << with_commas(total - trainable) << " (" << bytes(total - trainable) << ")\n";
}

}  // namespace mirror
