// Model: graph, naming, compile, weights (see model.hpp). The loops are the Trainer's.
#include "mirror/model/model.hpp"

#include <algorithm>
#include <map>
#include <set>

#include "mirror/engine/error.hpp"
#include "mirror/model/plan.hpp"
#include "mirror/model/runtime.hpp"
#include "mirror/model/trainer.hpp"

namespace mirror {

double EpochLog::get(const std::string& name) const {
  for (const auto& [key, value] : values)
    if (key == name) return value;
  throw InvalidArgument(str("epoch ", epoch, " has no value named '", name, "'"));
}

bool EpochLog::has(const std::string& name) const {
  return std::any_of(values.begin(), values.end(), [&](const auto& kv) { return kv.first == name; });
}

void EpochLog::set(const std::string& name, double value) {
  for (auto& [key, v] : values)
    if (key == name) {
      v = value;
      return;
    }
  values.emplace_back(name, value);
}

Model::Model(std::string name) : name_(std::move(name)) {}

Model::Model(const Tensor& input, const Tensor& output, std::string name) : name_(std::move(name)) {
  set_graph(input, output);
}

Model::~Model() {
  // A runtime frees its buffers through the strategy's backends, so a strategy destroyed first
  // drops the runtime itself (Strategy::on_destroy): one still here has a live strategy.
  if (runtime_) strategy_->forget(this);
}

void Model::set_graph(const Tensor& input, const Tensor& output) {
  MIRROR_REQUIRE(input.valid() && output.valid(), InvalidArgument, "a model needs an input and an output tensor");
  const std::vector<LayerPtr> layers = ordered_layers(input, output);
  std::map<std::string, int> used;
  std::set<std::string> names;
  for (const LayerPtr& layer : layers) {
    if (layer->name().empty()) {
      const int n = used[layer->default_name()]++;
      layer->set_name(n ? str(layer->default_name(), "_", n) : layer->default_name());
    }
    MIRROR_REQUIRE(names.insert(layer->name()).second, InvalidArgument, "two layers of the model are named '",
                   layer->name(), "': layer names must be unique (they name the variables in saved files)");
  }
  input_ = input;
  output_ = output;
}

void Model::build_from_data(const Shape&) {}

void Model::require_built(const char* what) const {
  MIRROR_REQUIRE(built(), InvalidArgument, "the model is not built yet, so it has no ", what,
                 ": give the first layer an input_shape or call fit()");
}

Shape Model::input_shape() const {
  require_built("input shape");
  return input_.shape();
}

Shape Model::output_shape() const {
  require_built("output shape");
  return output_.shape();
}

std::vector<LayerPtr> Model::layers() const { return built() ? ordered_layers(input_, output_) : std::vector<LayerPtr>{}; }

void Model::compile(Strategy& strategy, OptimizerPtr optimizer, Loss loss, std::vector<Metric> metrics, uint64_t seed) {
  MIRROR_REQUIRE(optimizer != nullptr, InvalidArgument, "compile() needs an optimizer, e.g. optimizers::Adam()");
  std::vector<float> kept;
  const bool keep = runtime_ != nullptr && !strategy_alive_.expired();
  if (keep) {
    const Strategy::Use use = strategy_->use("compile");
    kept = runtime_->get_weights(0);
    runtime_.reset();  // before the strategy it lives on may change
    strategy_->forget(this);
  }
  strategy_ = &strategy;
  strategy_alive_ = strategy.lifetime();
  optimizer_ = std::move(optimizer);
  loss_ = std::move(loss);
  metrics_ = std::move(metrics);
  seed_ = seed;
  if (!built()) build_declared();
  if (!keep && !pending_weights_.empty()) {
    kept = std::move(pending_weights_);
    pending_weights_.clear();
  }
  if (built()) {
    const Strategy::Use use = strategy.use("compile");
    make_runtime(kept.empty() ? nullptr : &kept);
  }
}

void Model::make_runtime(const std::vector<float>* weights) {
  const Shape out = output_.shape();
  loss_.check_output(out);
  std::vector<Metric> resolved;
  std::set<std::string> names{"loss"};
  for (const Metric& m : metrics_) {
    resolved.push_back(m.resolved_for(out[0]));
    MIRROR_REQUIRE(names.insert(m.name()).second, InvalidArgument, "metric '", m.name(), "' is given twice");
  }
  Strategy& strategy = *strategy_;
  const ConvPoolFusable fusable = [&strategy](const ConvGeometry& conv, const PoolGeometry& pool) {
    for (int r = 0; r < strategy.num_replicas(); ++r)
      if (!strategy.backend(r).fuses_conv2d_max_pool(conv, pool)) return false;
    return true;
  };
  runtime_ = std::make_unique<ModelRuntime>(make_plan(input_, output_, loss_, fusable), strategy, optimizer_, loss_,
                                            std::move(resolved), seed_);
  strategy.on_destroy(this, [this] { runtime_.reset(); });
  if (weights) runtime_->set_weights(*weights);
}

Strategy& Model::live_strategy(const char* what) const {
  MIRROR_REQUIRE(strategy_ != nullptr, InvalidArgument, "call compile() before ", what, "()");
  MIRROR_REQUIRE(!strategy_alive_.expired(), InvalidArgument, "cannot ", what,
                 "(): the strategy this model was compiled with was destroyed, and the model's variables with it; "
                 "compile it again with a live one");
  return *strategy_;
}

ModelRuntime& Model::runtime(const ImageSet* data, const char* what) {
  live_strategy(what);
  if (!built() && data) build_from_data(data->sample_shape());
  require_built("variables");
  if (!runtime_) make_runtime(nullptr);
  return *runtime_;
}

History Model::fit(const ImageSet& train, const FitOptions& options) {
  const Strategy::Use use = live_strategy("fit").use("fit");
  return Trainer(runtime(&train, "fit")).fit(train, options, *this);
}

EvaluateResult Model::evaluate(const ImageSet& data, const EvaluateOptions& options) {
  const Strategy::Use use = live_strategy("evaluate").use("evaluate");
  ModelRuntime& rt = runtime(&data, "evaluate");
  rt.require_consistent("evaluate");
  return Trainer(rt).evaluate(data, options);
}

std::vector<float> Model::predict(const ImageSet& data, int64_t batch_size) {
  const Strategy::Use use = live_strategy("predict").use("predict");
  ModelRuntime& rt = runtime(&data, "predict");
  rt.require_consistent("predict");
  if (data.labels.empty() && data.count > 0) {
    // The backends gather a label with each image; unlabelled images get zeros, never read.
    ImageSet labelled = data;
    labelled.labels.assign(static_cast<size_t>(data.count), 0);
    return Trainer(rt).predict(labelled, batch_size);
  }
  return Trainer(rt).predict(data, batch_size);
}

Optimizer& Model::optimizer() const {
  MIRROR_REQUIRE(optimizer_ != nullptr, InvalidArgument, "the model has no optimizer: call compile() first");
  return *optimizer_;
}

int64_t Model::iterations() const { return runtime_ ? runtime_->iterations() : 0; }

std::vector<float> Model::get_weights(int replica) {
  if (!runtime_ && !pending_weights_.empty()) return pending_weights_;
  const Strategy::Use use = live_strategy("get_weights").use("get_weights");
  return runtime(nullptr, "get_weights").get_weights(replica);
}

void Model::set_weights(std::span<const float> weights) {
  if (strategy_ == nullptr && built()) {
    const auto expected = static_cast<size_t>(count_params());
    MIRROR_REQUIRE(weights.size() == expected, InvalidArgument, "set_weights got ", weights.size(),
                   " values, the model has ", expected);
    pending_weights_.assign(weights.begin(), weights.end());
    return;
  }
  const Strategy::Use use = live_strategy("set_weights").use("set_weights");
  runtime(nullptr, "set_weights").set_weights(weights);
}

bool Model::replicas_identical() {
  const Strategy::Use use = live_strategy("replicas_identical").use("replicas_identical");
  return runtime(nullptr, "replicas_identical").replicas_identical();
}

std::vector<VariableInfo> Model::variables() const {
  std::vector<VariableInfo> result;
  for (const LayerPtr& layer : layers()) {
    if (!layer->built()) continue;  // an unbuilt Sequential has no variables yet
    for (const VariableSpec& v : layer->variables()) result.push_back({layer->name() + "/" + v.name, v.shape, v.trainable});
  }
  return result;
}

int64_t Model::count_params() const {
  int64_t n = 0;
  for (const VariableInfo& v : variables()) n += v.shape.count();
  return n;
}

int64_t Model::count_trainable_params() const {
  int64_t n = 0;
  for (const VariableInfo& v : variables()) n += v.trainable ? v.shape.count() : 0;
  return n;
}

}  // namespace mirror
