// Which layer group of a Keras weights file holds which of Mirror's variables: Keras's walk order
// over a model's layers, and the model's variables split into and gathered from those groups.
#include <algorithm>
#include <cctype>
#include <set>
#include <unordered_map>

#include "mirror/engine/error.hpp"
#include "mirror/model/saving/keras_format.hpp"

namespace mirror::saving {

std::string to_snake_case(const std::string& class_name) {
  // Keras: insert "_" before an upper-case letter that starts a lower-case run (not at the start),
  // then between a lower-case letter and an upper-case one; lower the result.
  std::string s;
  for (char c : class_name)
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '_') s += c;
  std::string a;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool run = std::isupper(static_cast<unsigned char>(s[i])) && i + 1 < s.size() &&
                     std::islower(static_cast<unsigned char>(s[i + 1]));
    if (run && i > 0) a += '_';
    a += s[i];
  }
  std::string b;
  for (size_t i = 0; i < a.size(); ++i) {
    if (i > 0 && std::islower(static_cast<unsigned char>(a[i - 1])) && std::isupper(static_cast<unsigned char>(a[i])))
      b += '_';
    b += static_cast<char>(std::tolower(static_cast<unsigned char>(a[i])));
  }
  return b;
}

namespace {

// keras/src/ops/function.py's map_graph for one output: depth = the longest path to the output.
// The depth-first walk keeps its own stack, as a model 100,000 layers deep needs.
std::vector<std::shared_ptr<Node>> functional_order(const Tensor& output) {
  std::unordered_map<const Node*, int> first_seen;  // pre-order index of the depth-first walk
  std::vector<std::shared_ptr<Node>> post_order;
  std::set<const Node*> done;
  std::vector<std::pair<std::shared_ptr<Node>, size_t>> stack;  // a node and its next input to walk
  const auto enter = [&](const std::shared_ptr<Node>& node) {
    if (done.count(node.get())) return;
    first_seen.emplace(node.get(), static_cast<int>(first_seen.size()));
    stack.emplace_back(node, 0);
  };
  enter(output.node());
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->inputs.size()) {
      enter(node->inputs[next++].node());  // may grow the stack: `node` and `next` are not used after
      continue;
    }
    done.insert(node.get());
    post_order.push_back(std::move(node));
    stack.pop_back();
  }
  std::unordered_map<const Node*, int> depth;
  for (auto it = post_order.rbegin(); it != post_order.rend(); ++it) {
    const int d = depth[it->get()];
    for (const Tensor& in : (*it)->inputs) depth[in.node().get()] = std::max(depth[in.node().get()], d + 1);
  }
  std::vector<std::shared_ptr<Node>> order = post_order;
  std::stable_sort(order.begin(), order.end(), [&](const auto& a, const auto& b) {
    const int da = depth[a.get()], db = depth[b.get()];
    return da != db ? da > db : first_seen[a.get()] < first_seen[b.get()];
  });
  return order;
}

}  // namespace

std::vector<KerasLayer> keras_layers(const Model& model) {
  MIRROR_REQUIRE(model.built(), InvalidArgument,
                 "the model is not built yet, so it has no variables to save or load: give the first layer an "
                 "input_shape or call fit()");
  std::vector<KerasLayer> result;
  std::map<std::string, int> used;
  const auto add = [&](LayerPtr layer, std::shared_ptr<Node> node) {
    const std::string stem = to_snake_case(layer ? layer->type() : "InputLayer");
    auto [it, fresh] = used.try_emplace(stem, 0);
    if (!fresh) ++it->second;
    std::string name = layer ? layer->name() : node->input_name;
    result.push_back({fresh ? stem : str(stem, "_", it->second), std::move(name), std::move(layer), std::move(node)});
  };
  if (model.sequential()) {
    for (const LayerPtr& layer : model.layers()) add(layer, nullptr);
  } else {
    for (const auto& node : functional_order(model.output())) add(node->layer, node);
  }
  return result;
}

namespace {

struct Place {
  size_t offset = 0;
  Shape shape;
};

// Each variable's place in get_weights(), by its path ("conv2d/kernel").
std::map<std::string, Place> places(const Model& model) {
  std::map<std::string, Place> result;
  size_t offset = 0;
  for (const VariableInfo& v : model.variables()) {
    result[v.path] = {offset, v.shape};
    offset += static_cast<size_t>(v.shape.count());
  }
  return result;
}

std::string shape_text(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

}  // namespace

WeightsImage weights_of(Model& model) {
  const std::vector<float> weights = model.get_weights();
  const auto where = places(model);
  WeightsImage image;
  image.model_name = model.name();
  for (const KerasLayer& k : keras_layers(model)) {
    image.keys.push_back(k.key);
    image.names[k.key] = k.name;
    auto& vars = image.vars[k.key];
    if (!k.layer) continue;
    for (const VariableSpec& v : k.layer->variables()) {
      const Place& p = where.at(k.name + "/" + v.name);
      const auto first = weights.begin() + static_cast<ptrdiff_t>(p.offset);
      vars.push_back({p.shape.dims(), std::vector<float>(first, first + p.shape.count())});
    }
  }
  return image;
}

void set_weights_from(Model& model, const WeightsImage& file, const std::string& source) {
  // Every variable is in exactly one group and every group is checked complete below, so the file
  // sets all of them: no need to read the current ones (an uncompiled model has none yet). The
  // buffer is allocated only once every shape matched, so its size is bounded by the file's.
  const auto where = places(model);
  std::vector<float> weights;
  std::vector<std::pair<const Array*, size_t>> copies;  // (file array, offset)
  std::set<std::string> keys;
  for (const KerasLayer& k : keras_layers(model)) {
    keys.insert(k.key);
    const std::vector<VariableSpec> specs = k.layer ? k.layer->variables() : std::vector<VariableSpec>{};
    const auto found = file.vars.find(k.key);
    const size_t have = found == file.vars.end() ? 0 : found->second.size();
    MIRROR_REQUIRE(have == specs.size(), DataError, source, ": layer '", k.name, "' (", k.layer ? k.layer->type() : "InputLayer",
                   ", group layers/", k.key, ") has ", specs.size(), " variables in the model but ", have,
                   " in the file: the file was saved from another architecture");
    for (size_t i = 0; i < specs.size(); ++i) {
      const Array& a = found->second[i];
      const Place& p = where.at(k.name + "/" + specs[i].name);
      MIRROR_REQUIRE(a.shape == p.shape.dims(), DataError, source, ": variable ", k.name, "/", specs[i].name,
                     " (layers/", k.key, "/vars/", i, ") has shape ", shape_text(a.shape), " in the file but ",
                     shape_text(p.shape.dims()), " in the model");
      copies.emplace_back(&a, p.offset);
    }
  }
  for (const auto& [key, vars] : file.vars)
    MIRROR_REQUIRE(vars.empty() || keys.count(key), DataError, source, ": the file has variables for layer group '", key,
                   "', which the model does not have: the file was saved from another architecture");
  weights.resize(static_cast<size_t>(model.count_params()));
  for (const auto& [a, offset] : copies) std::copy(a->values.begin(), a->values.end(), weights.begin() + static_cast<ptrdiff_t>(offset));
  model.set_weights(weights);
}

}  // namespace mirror::saving
