// config.json of a ".keras" archive: Keras 3's Sequential / Functional config written from a
// model's graph, and a graph rebuilt from one (every layer Mirror has; anything else is refused
// with the class named).
#include <set>

#include "mirror/engine/error.hpp"
#include "mirror/model/layers.hpp"
#include "mirror/model/saving/keras_format.hpp"
#include "mirror/model/sequential.hpp"

namespace mirror::saving {

using nlohmann::json;

namespace {

// ---- Writing ----------------------------------------------------------------------------------

json batch_shape(const Shape& shape) {
  json s = json::array({nullptr});
  for (int64_t d : shape.dims()) s.push_back(d);
  return s;
}

json input_layer_json(const std::string& name, const Shape& shape) {
  return {{"module", "keras.layers"},
          {"class_name", "InputLayer"},
          {"config", {{"batch_shape", batch_shape(shape)}, {"dtype", "float32"}, {"sparse", false}, {"ragged", false}, {"name", name}}},
          {"registered_name", nullptr}};
}

json layer_json(const Layer& layer) {
  json config = {{"name", layer.name()}, {"trainable", true}, {"dtype", "float32"}};
  for (const auto& [key, value] : layer.config()) config[key] = json::parse(value);
  json j = {{"module", "keras.layers"}, {"class_name", layer.type()}, {"config", config}, {"registered_name", nullptr}};
  if (layer.input_shapes().size() == 1) j["build_config"] = {{"input_shape", batch_shape(layer.input_shape())}};
  return j;
}

json keras_tensor(const Node& node, const std::string& name) {
  return {{"class_name", "__keras_tensor__"},
          {"config", {{"shape", batch_shape(node.shape)}, {"dtype", "float32"}, {"keras_history", {name, 0, 0}}}}};
}

std::string name_of(const Node& node) { return node.layer ? node.layer->name() : node.input_name; }

json functional_config(const Model& model) {
  json layers = json::array();
  for (const KerasLayer& k : keras_layers(model)) {
    if (!k.layer) {
      json j = input_layer_json(k.name, k.node->shape);
      j["name"] = k.name;
      j["inbound_nodes"] = json::array();
      layers.push_back(j);
      continue;
    }
    json args = json::array();
    for (const Tensor& in : k.node->inputs) args.push_back(keras_tensor(*in.node(), name_of(*in.node())));
    json j = layer_json(*k.layer);
    j["name"] = k.name;
    j["inbound_nodes"] = json::array({{{"args", json::array({args.size() == 1 ? args[0] : args})}, {"kwargs", json::object()}}});
    layers.push_back(j);
  }
  return {{"module", "keras.src.models.functional"},
          {"class_name", "Functional"},
          {"config",
           {{"name", model.name()},
            {"trainable", true},
            {"layers", layers},
            {"input_layers", {model.input().node()->input_name, 0, 0}},
            {"output_layers", {name_of(*model.output().node()), 0, 0}}}},
          {"registered_name", "Functional"},
          {"build_config", {{"input_shape", nullptr}}},
          {"compile_config", nullptr}};
}

json sequential_config(const Model& model) {
  json layers = json::array({input_layer_json(model.input().node()->input_name, model.input_shape())});
  for (const LayerPtr& layer : model.layers()) layers.push_back(layer_json(*layer));
  return {{"module", "keras"},
          {"class_name", "Sequential"},
          {"config", {{"name", model.name()}, {"trainable", true}, {"layers", layers}, {"build_input_shape", batch_shape(model.input_shape())}}},
          {"registered_name", nullptr},
          {"build_config", {{"input_shape", batch_shape(model.input_shape())}}},
          {"compile_config", nullptr}};
}

}  // namespace

json model_config(const Model& model) {
  MIRROR_REQUIRE(model.built(), InvalidArgument, "the model is not built yet: give the first layer an input_shape or call fit() before saving");
  return model.sequential() ? sequential_config(model) : functional_config(model);
}

// ---- Reading ----------------------------------------------------------------------------------

namespace {

// A serialized Keras object as a person writes it: "L2 (l2=0.01)", "MaxNorm (axis=0, max_value=2)".
std::string describe(const json& object) {
  if (!object.is_object()) return object.dump();
  std::string text = object.contains("class_name") && object["class_name"].is_string() ? object["class_name"].get<std::string>()
                                                                                         : object.dump();
  if (object.contains("config") && object["config"].is_object() && !object["config"].empty()) {
    std::string args;
    for (const auto& [key, value] : object["config"].items()) args += (args.empty() ? "" : ", ") + key + "=" + value.dump();
    text += " (" + args + ")";
  }
  return text;
}

// Reads one layer's config, naming the file, layer and argument in every error.
class ConfigReader {
 public:
  ConfigReader(const json& config, std::string class_name, const std::string& source)
      : c_(config), class_(std::move(class_name)), source_(source) {
    MIRROR_REQUIRE(c_.is_object(), DataError, source_, ": the config of a ", class_, " layer is not a JSON object");
  }

  std::string name() const { return get<std::string>("name", ""); }

  template <typename T>
  T get(const std::string& key, T fallback) const {
    if (!c_.contains(key) || c_[key].is_null()) return fallback;
    T value;
    try {
      value = c_[key].get<T>();
    } catch (const json::exception&) {
      fail(key, "is not of the expected type");
    }
    if constexpr (std::is_same_v<T, int64_t>) check_size(key, value);
    if constexpr (std::is_same_v<T, std::vector<int64_t>>)
      for (int64_t v : value) check_size(key, v);
    return value;
  }

  // Sizes (filters, units, kernel sizes, ...) far past any real model are refused before a layer
  // is built from them, so that no product of them can overflow.
  void check_size(const std::string& key, int64_t value) const {
    if (value < -1 || value > kMaxSize) fail(key, str("is outside [-1, ", kMaxSize, "]"));
  }
  static constexpr int64_t kMaxSize = int64_t{1} << 16;

  layers::Size2 pair(const std::string& key, layers::Size2 fallback) const {
    if (!c_.contains(key) || c_[key].is_null()) return fallback;
    const json& v = c_[key];
    if (v.is_number_integer()) {
      check_size(key, v.get<int64_t>());
      return {v.get<int64_t>(), v.get<int64_t>()};
    }
    const auto list = get<std::vector<int64_t>>(key, {});
    if (list.size() != 2) fail(key, "needs two values");
    return {list[0], list[1]};
  }

  Padding padding() const {
    const std::string p = get<std::string>("padding", "valid");
    if (p == "valid") return Padding::Valid;
    if (p == "same") return Padding::Same;
    fail("padding", "is not supported (Mirror has 'valid' and 'same')");
  }

  mirror::Activation activation(const std::string& key = "activation") const {
    const std::string a = get<std::string>(key, "linear");
    for (auto act : {mirror::Activation::Linear, mirror::Activation::ReLU, mirror::Activation::Softmax, mirror::Activation::Sigmoid,
                     mirror::Activation::Tanh, mirror::Activation::GELU, mirror::Activation::SiLU})
      if (a == to_string(act)) return act;
    if (a == "swish") return mirror::Activation::SiLU;
    fail(key, "is an activation Mirror does not have");
  }

  Initializer initializer(const std::string& key) const {
    // Only fresh variables depend on it; loaded weights replace them. Unknown ones keep Keras's default.
    std::string name = c_.contains(key) && c_[key].is_string() ? c_[key].get<std::string>() : "";
    if (c_.contains(key) && c_[key].is_object()) name = to_snake_case(c_[key].value("class_name", ""));
    for (auto init : {Initializer::Zeros, Initializer::Ones, Initializer::GlorotUniform, Initializer::HeNormal, Initializer::HeUniform})
      if (name == to_string(init)) return init;
    return Initializer::GlorotUniform;
  }

  // An argument Mirror supports only at one value (dilation_rate = (1, 1), channels_last, ...).
  void require(const std::string& key, const json& supported) const {
    if (!c_.contains(key) || c_[key].is_null() || c_[key] == supported) return;
    if (supported.is_array() && supported.size() == 2 && c_[key].is_number_integer() && c_[key] == supported[0]) return;
    fail(key, str("is not supported (Mirror supports ", supported.dump(), ")"));
  }

  // Regularizers and constraints change what training does; Mirror has none, so a file that sets
  // one is refused rather than trained without it. null (Keras's default) is fine.
  void refuse_regularizers_and_constraints() const {
    static const char* const kKeys[] = {"kernel_regularizer", "bias_regularizer", "activity_regularizer",
                                        "beta_regularizer",   "gamma_regularizer", "kernel_constraint",
                                        "bias_constraint",    "beta_constraint",   "gamma_constraint"};
    for (const char* key : kKeys) {
      if (!c_.contains(key) || c_[key].is_null()) continue;
      throw DataError(str(source_, ": layer '", name(), "' has ", key, " ", describe(c_[key]),
                          ", which Mirror does not implement: training in Mirror would ignore it. Train this model in "
                          "Keras, or set ", key, " to None in Keras and save it again to train it in Mirror without it"));
    }
  }

  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    throw DataError(str(source_, ": ", class_, " layer '", name(), "': argument ", key, " = ",
                        c_.contains(key) ? c_[key].dump() : "(missing)", " ", why));
  }

 private:
  const json& c_;
  std::string class_;
  const std::string& source_;
};

LayerPtr make_layer(const std::string& cls, const json& config, const std::string& source) {
  const ConfigReader c(config, cls, source);
  c.refuse_regularizers_and_constraints();
  c.require("data_format", "channels_last");
  const std::string name = c.name();
  if (cls == "Conv2D") {
    c.require("dilation_rate", json::array({1, 1}));
    c.require("groups", 1);
    return layers::Conv2D(c.get<int64_t>("filters", 0), c.pair("kernel_size", {0, 0}),
                          {.strides = c.pair("strides", {1, 1}), .padding = c.padding(), .activation = c.activation(),
                           .use_bias = c.get<bool>("use_bias", true), .kernel_initializer = c.initializer("kernel_initializer"),
                           .name = name});
  }
  if (cls == "Dense")
    return layers::Dense(c.get<int64_t>("units", 0), {.activation = c.activation(), .use_bias = c.get<bool>("use_bias", true),
                                                      .kernel_initializer = c.initializer("kernel_initializer"), .name = name});
  if (cls == "MaxPooling2D" || cls == "AveragePooling2D") {
    const layers::Size2 pool = c.pair("pool_size", {2, 2});
    const layers::PoolOptions o{.strides = c.pair("strides", pool), .padding = c.padding(), .name = name};
    return cls == "MaxPooling2D" ? layers::MaxPooling2D(pool, o) : layers::AveragePooling2D(pool, o);
  }
  if (cls == "GlobalAveragePooling2D") {
    c.require("keepdims", false);
    return layers::GlobalAveragePooling2D(name);
  }
  if (cls == "BatchNormalization") {
    c.require("axis", -1);
    return layers::BatchNormalization({.momentum = c.get<float>("momentum", 0.99f), .epsilon = c.get<float>("epsilon", 1e-3f),
                                       .center = c.get<bool>("center", true), .scale = c.get<bool>("scale", true),
                                       .synchronized = c.get<bool>("synchronized", false), .name = name});
  }
  if (cls == "Dropout") {
    c.require("noise_shape", nullptr);
    return layers::Dropout(c.get<float>("rate", 0.0f), name);
  }
  if (cls == "Activation") return layers::Activation(c.activation(), name);
  if (cls == "ReLU") {
    c.require("max_value", nullptr);
    c.require("negative_slope", 0.0);
    c.require("threshold", 0.0);
    return layers::ReLU(name);
  }
  if (cls == "Add") return layers::Add(name);
  if (cls == "Concatenate") {
    c.require("axis", -1);
    return layers::Concatenate(name);
  }
  if (cls == "ZeroPadding2D") {
    const json p = config.value("padding", json(1));
    const auto size = [&](const json& v) {
      c.check_size("padding", v.get<int64_t>());
      return v.get<int64_t>();
    };
    if (p.is_number_integer()) return layers::ZeroPadding2D(size(p), name);
    std::array<PadPair, 2> pads{};
    if (!p.is_array() || p.size() != 2) c.fail("padding", "is not an integer or a pair");
    for (size_t i = 0; i < 2; ++i) {
      if (p[i].is_number_integer()) {
        pads[i] = {size(p[i]), size(p[i])};
      } else if (p[i].is_array() && p[i].size() == 2 && p[i][0].is_number_integer() && p[i][1].is_number_integer()) {
        pads[i] = {size(p[i][0]), size(p[i][1])};
      } else {
        c.fail("padding", "is not ((top, bottom), (left, right))");
      }
    }
    return layers::ZeroPadding2D(pads, name);
  }
  if (cls == "Flatten") {
    LayerPtr layer = layers::Flatten();
    layer->set_name(name);
    return layer;
  }
  if (cls == "Reshape") return layers::Reshape(Shape(c.get<std::vector<int64_t>>("target_shape", {})), name);
  throw DataError(str(source, ": layer '", name, "' is a ", cls,
                      ", which Mirror does not have (it has Conv2D, Dense, MaxPooling2D, AveragePooling2D, "
                      "GlobalAveragePooling2D, BatchNormalization, Dropout, Activation, ReLU, Add, Concatenate, "
                      "ZeroPadding2D, Flatten, Reshape)"));
}

const json& member(const json& j, const std::string& key, const std::string& source, const char* where) {
  MIRROR_REQUIRE(j.is_object() && j.contains(key), DataError, source, ": ", where, " has no '", key, "'");
  return j[key];
}

Shape input_shape_of(const json& layer_config, const std::string& source) {
  const json& c = member(layer_config, "config", source, "an InputLayer");
  const json& shape = c.contains("batch_shape") ? c["batch_shape"] : member(c, "batch_input_shape", source, "an InputLayer's config");
  MIRROR_REQUIRE(shape.is_array() && shape.size() >= 2, DataError, source, ": InputLayer batch_shape ", shape.dump(),
                 " is not (batch, ...)");
  std::vector<int64_t> dims;
  int64_t count = 1;
  for (size_t i = 1; i < shape.size(); ++i) {
    MIRROR_REQUIRE(shape[i].is_number_integer() && shape[i].get<int64_t>() > 0, DataError, source,
                   ": InputLayer batch_shape ", shape.dump(), " has a dimension that is not a positive integer");
    dims.push_back(shape[i].get<int64_t>());
    // Bounded so that no shape computed from it overflows.
    MIRROR_REQUIRE(dims.back() <= (int64_t{1} << 30) / count, DataError, source, ": InputLayer batch_shape ", shape.dump(),
                   " has more than 2^30 values per sample");
    count *= dims.back();
  }
  return Shape(dims);
}

LayerPtr layer_of(const json& entry, const std::string& source) {
  const std::string cls = member(entry, "class_name", source, "a layer").get<std::string>();
  return make_layer(cls, member(entry, "config", source, str("layer of class ", cls).c_str()), source);
}

std::string history_name(const json& tensor, const std::string& source) {
  const json& history = member(member(tensor, "config", source, "an inbound tensor"), "keras_history", source, "an inbound tensor");
  MIRROR_REQUIRE(history.is_array() && history.size() == 3 && history[0].is_string(), DataError, source,
                 ": keras_history ", history.dump(), " is not [layer, node, tensor]");
  MIRROR_REQUIRE(history[1] == 0 && history[2] == 0, DataError, source, ": layer '", history[0].get<std::string>(),
                 "' is called more than once (a shared layer), which Mirror does not support");
  return history[0].get<std::string>();
}

// [name, 0, 0] or [[name, 0, 0]] (one tensor).
std::string endpoint(const json& j, const std::string& source, const char* what) {
  const json& e = j.is_array() && j.size() == 1 && j[0].is_array() ? j[0] : j;
  MIRROR_REQUIRE(e.is_array() && e.size() == 3 && e[0].is_string(), DataError, source, ": ", what, " ", j.dump(),
                 " is not one [layer, 0, 0] (Mirror models have one input and one output)");
  return e[0].get<std::string>();
}

std::unique_ptr<Model> functional_from(const json& config, const std::string& source) {
  std::map<std::string, Tensor> tensors;
  for (const json& entry : member(config, "layers", source, "the model config")) {
    const std::string cls = member(entry, "class_name", source, "a layer").get<std::string>();
    if (cls == "InputLayer") {
      const std::string name = member(member(entry, "config", source, "an InputLayer"), "name", source, "an InputLayer").get<std::string>();
      tensors[name] = Input(input_shape_of(entry, source), name);
      continue;
    }
    LayerPtr layer = layer_of(entry, source);
    const json& nodes = member(entry, "inbound_nodes", source, "a layer");
    MIRROR_REQUIRE(nodes.is_array() && nodes.size() == 1, DataError, source, ": layer '", layer->name(), "' is called ",
                   nodes.is_array() ? nodes.size() : 0, " times; Mirror supports layers called exactly once");
    const json& args = member(nodes[0], "args", source, "an inbound node");
    MIRROR_REQUIRE(args.is_array() && args.size() == 1, DataError, source, ": layer '", layer->name(),
                   "' takes one argument, got ", args.dump());
    const json& arg = args[0];
    std::vector<Tensor> inputs;
    for (const json& t : arg.is_array() ? arg : json::array({arg})) {
      const std::string from = history_name(t, source);
      MIRROR_REQUIRE(tensors.count(from), DataError, source, ": layer '", layer->name(), "' reads '", from,
                     "', which no earlier layer produces");
      inputs.push_back(tensors[from]);
    }
    tensors[layer->name()] = layer(inputs);
  }
  const std::string in = endpoint(member(config, "input_layers", source, "the model config"), source, "input_layers");
  const std::string out = endpoint(member(config, "output_layers", source, "the model config"), source, "output_layers");
  MIRROR_REQUIRE(tensors.count(in) && tensors.count(out), DataError, source, ": the model's input '", in, "' or output '",
                 out, "' is not among its layers");
  return std::make_unique<Model>(tensors[in], tensors[out], config.value("name", "functional"));
}

std::unique_ptr<Model> sequential_from(const json& config, const std::string& source) {
  std::vector<LayerPtr> layers;
  std::optional<Shape> input;
  for (const json& entry : member(config, "layers", source, "the model config")) {
    if (member(entry, "class_name", source, "a layer") == "InputLayer") {
      input = input_shape_of(entry, source);
    } else {
      layers.push_back(layer_of(entry, source));
    }
  }
  if (!input && config.contains("build_input_shape")) input = input_shape_of({{"config", {{"batch_shape", config["build_input_shape"]}}}}, source);
  MIRROR_REQUIRE(input.has_value(), DataError, source, ": the Sequential model has no input shape (no InputLayer)");
  auto model = std::make_unique<Sequential>(layers, config.value("name", "sequential"));
  model->build(*input);
  return model;
}

}  // namespace

std::unique_ptr<Model> model_from_config(const json& root, const std::string& source) {
  try {
    const std::string cls = member(root, "class_name", source, "config.json").get<std::string>();
    const json& config = member(root, "config", source, "config.json");
    if (cls == "Sequential") return sequential_from(config, source);
    if (cls == "Functional" || cls == "Model") return functional_from(config, source);
    throw DataError(str(source, ": the model is a ", cls, "; Mirror reads Sequential and Functional models"));
  } catch (const json::exception& e) {
    throw DataError(str(source, ": config.json does not have Keras's structure (", e.what(), ")"));
  } catch (const InvalidArgument& e) {
    throw DataError(str(source, ": the model in config.json cannot be built: ", e.what()));
  }
}

// ---- Synchronized batch normalization, kept where Keras does not look ---------------------------

namespace {

constexpr const char* kSynchronizedKey = "synchronized_batch_normalization";

json* layers_of(json& config) {
  if (!config.is_object() || !config.contains("config") || !config["config"].is_object()) return nullptr;
  json& c = config["config"];
  return c.contains("layers") && c["layers"].is_array() ? &c["layers"] : nullptr;
}

bool is_batch_norm(const json& entry) {
  return entry.is_object() && entry.value("class_name", json()) == "BatchNormalization" && entry.contains("config") &&
         entry["config"].is_object();
}

}  // namespace

json take_synchronized_flags(json& config) {
  json names = json::array();
  if (json* layers = layers_of(config))
    for (json& entry : *layers) {
      if (!is_batch_norm(entry) || entry["config"].value("synchronized", false) != true) continue;
      entry["config"]["synchronized"] = false;
      names.push_back(entry["config"]["name"]);
    }
  return {{kSynchronizedKey, names}};
}

void restore_synchronized_flags(json& config, const json& metadata, const std::string& source) {
  if (!metadata.contains("mirror") || !metadata["mirror"].is_object() || !metadata["mirror"].contains(kSynchronizedKey)) return;
  const json& names = metadata["mirror"][kSynchronizedKey];
  MIRROR_REQUIRE(names.is_array(), DataError, source, ": metadata.json's mirror.", kSynchronizedKey, " ", names.dump(),
                 " is not a list of layer names");
  json* layers = layers_of(config);
  for (const json& name : names) {
    json* found = nullptr;
    if (layers)
      for (json& entry : *layers)
        if (is_batch_norm(entry) && entry["config"].value("name", json()) == name) found = &entry;
    MIRROR_REQUIRE(found, DataError, source, ": metadata.json names ", name.dump(),
                   " as a synchronized BatchNormalization, but config.json has no BatchNormalization of that name");
    (*found)["config"]["synchronized"] = true;
  }
}

}  // namespace mirror::saving
