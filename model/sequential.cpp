// Sequential: construction, building, compiling, parameter layout and weights.
#include "model/sequential.hpp"

#include <cmath>
#include <cstring>
#include <map>

#include "engine/error.hpp"
#include "engine/random.hpp"
#include "model/replica_state.hpp"

namespace mirror {
namespace {

constexpr size_t kAlignFloats = 16;  // 64-byte alignment of every parameter in the flat buffer

size_t align_up(size_t n) { return (n + kAlignFloats - 1) / kAlignFloats * kAlignFloats; }

}  // namespace

Sequential::Sequential(std::initializer_list<LayerPtr> layers) : Sequential(std::vector<LayerPtr>(layers)) {}

Sequential::Sequential(std::vector<LayerPtr> layers, std::string name) : name_(std::move(name)) {
  for (auto& layer : layers) add(std::move(layer));
}

Sequential::~Sequential() = default;

void Sequential::add(LayerPtr layer) {
  MIRROR_REQUIRE(layer != nullptr, InvalidArgument, "Sequential::add was given a null layer");
  MIRROR_REQUIRE(!strategy_, InvalidArgument, "cannot add layers to a compiled model");
  int repeats = 0;
  for (const auto& l : layers_) repeats += l->default_name() == layer->default_name();
  layer->set_name(repeats ? str(layer->default_name(), "_", repeats) : layer->default_name());
  layers_.push_back(std::move(layer));
}

Shape Sequential::input_shape() const {
  MIRROR_REQUIRE(built_, InvalidArgument, "the model is not built yet: give the first layer an input_shape or call fit()");
  return layers_.front()->input_shape();
}

Shape Sequential::output_shape() const {
  MIRROR_REQUIRE(built_, InvalidArgument, "the model is not built yet: give the first layer an input_shape or call fit()");
  return layers_.back()->output_shape();
}

void Sequential::build(const Shape& input) {
  Shape shape = input;
  for (auto& layer : layers_) shape = layer->build(shape);
  MIRROR_REQUIRE(shape.rank() == 1, InvalidArgument, "the model's output has shape ", shape,
                 "; sparse categorical cross-entropy needs one row of class scores per sample (end with a Dense layer)");
  layer_params_.assign(layers_.size(), {});
  size_t offset = 0;
  for (size_t l = layers_.size(); l-- > 0;) {  // reverse layer order: last layer's gradients first
    for (const ParamSpec& spec : layers_[l]->param_specs()) {
      const auto count = static_cast<size_t>(spec.shape.count());
      layer_params_[l].push_back({offset, count});
      offset += align_up(count);
    }
  }
  param_count_ = offset;
  stats_offset_ = offset;
  // Backward runs from the last layer down, and parameters are laid out from the last layer up, so
  // after layer l every gradient below the first parameter of a lower layer is final.
  ready_after_.assign(layers_.size(), param_count_);
  for (size_t l = 0; l < layers_.size(); ++l)
    for (size_t k = 0; k < l; ++k)
      if (!layer_params_[k].empty()) ready_after_[l] = std::min(ready_after_[l], layer_params_[k].front().offset);
  built_ = true;
}

void Sequential::require_compiled(const char* what) const {
  MIRROR_REQUIRE(strategy_ != nullptr, InvalidArgument, "call compile() before ", what, "()");
}

void Sequential::compile(Strategy& strategy, OptimizerPtr optimizer, losses::SparseCategoricalCrossentropy,
                         std::vector<metrics::Metric> metrics, uint64_t seed) {
  MIRROR_REQUIRE(!layers_.empty(), InvalidArgument, "cannot compile a model without layers");
  MIRROR_REQUIRE(optimizer != nullptr, InvalidArgument, "compile() needs an optimizer, e.g. optimizers::Adam()");
  for (const auto& m : metrics)
    MIRROR_REQUIRE(m.name == "accuracy", InvalidArgument, "unknown metric '", m.name, "': Mirror has metrics::Accuracy()");
  strategy_ = &strategy;
  optimizer_ = std::move(optimizer);
  metrics_ = std::move(metrics);
  iterations_ = 0;
  replicas_.clear();
  seed_ = seed;
  // A model whose input shape is unknown is built by the first fit(), from the data.
  if (const auto& declared = layers_.front()->declared_input_shape()) build(*declared);
  if (built_) initialize_parameters();
}

void Sequential::initialize_parameters() {
  // Every value is a pure function of (seed, layer, parameter, element): the same weights for any
  // device or replica count.
  std::vector<float> flat(param_count_, 0.0f);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const auto specs = layers_[l]->param_specs();
    for (size_t j = 0; j < specs.size(); ++j) {
      if (specs[j].init != Initializer::GlorotUniform) continue;
      const double limit = std::sqrt(6.0 / static_cast<double>(specs[j].fan_in + specs[j].fan_out));
      const ParamSlot slot = layer_params_[l][j];
      for (size_t i = 0; i < slot.count; ++i) {
        const float u = random::uniform(seed_, (uint64_t{l} << 8) | j, i);
        flat[slot.offset + i] = static_cast<float>((2.0 * u - 1.0) * limit);
      }
    }
  }
  replicas_.clear();
  for (int r = 0; r < strategy_->num_replicas(); ++r) replicas_.push_back(std::make_unique<ReplicaState>());
  const size_t slot_floats = static_cast<size_t>(optimizer_->slot_count()) * param_count_;
  strategy_->run([&](int r) {
    Backend& b = strategy_->backend(r);
    ReplicaState& s = *replicas_[static_cast<size_t>(r)];
    s.params = b.allocate(param_count_ * sizeof(float));
    s.grads = b.allocate((param_count_ + kStatCount) * sizeof(float));
    s.eval_stats = b.allocate(kStatCount * sizeof(float));
    s.totals = b.allocate(kTotalCount * sizeof(float));
    b.fill(s.grads.as<float>(), param_count_ + kStatCount, 0.0f);
    if (slot_floats > 0) {
      s.slots = b.allocate(slot_floats * sizeof(float));
      b.fill(s.slots.as<float>(), slot_floats, 0.0f);
    }
    s.param_views.assign(layers_.size(), {});
    s.grad_views.assign(layers_.size(), {});
    for (size_t l = 0; l < layers_.size(); ++l) {
      for (const ParamSlot& p : layer_params_[l]) {
        s.param_views[l].push_back(s.params.as<float>() + p.offset);
        s.grad_views[l].push_back(s.grads.as<float>() + p.offset);
      }
    }
    // Created once on replica 0 and broadcast, so the replicas start identical.
    if (r == 0) b.upload(flat.data(), s.params.data(), param_count_ * sizeof(float));
    strategy_->communicator().broadcast(r, {s.params.as<float>(), param_count_}, 0);
  });
}

int64_t Sequential::count_params() const {
  int64_t n = 0;
  for (const auto& layer : layers_)
    for (const ParamSpec& spec : layer->param_specs()) n += spec.shape.count();
  return n;
}

std::vector<float> Sequential::get_weights(int replica) {
  require_compiled("get_weights");
  MIRROR_REQUIRE(replica >= 0 && replica < strategy_->num_replicas(), InvalidArgument, "replica ", replica,
                 " does not exist; the strategy has ", strategy_->num_replicas());
  MIRROR_REQUIRE(built_, InvalidArgument, "the model has no weights before it is built");
  std::vector<float> flat(param_count_);
  strategy_->run([&](int r) {
    if (r == replica)
      strategy_->backend(r).download(replicas_[static_cast<size_t>(r)]->params.data(), flat.data(), param_count_ * sizeof(float));
  });
  std::vector<float> weights;
  weights.reserve(static_cast<size_t>(count_params()));
  for (const auto& layer : layer_params_)
    for (const ParamSlot& p : layer) weights.insert(weights.end(), flat.begin() + static_cast<long>(p.offset),
                                                    flat.begin() + static_cast<long>(p.offset + p.count));
  return weights;
}

void Sequential::set_weights(std::span<const float> weights) {
  require_compiled("set_weights");
  MIRROR_REQUIRE(built_, InvalidArgument, "the model has no weights before it is built");
  MIRROR_REQUIRE(static_cast<int64_t>(weights.size()) == count_params(), InvalidArgument, "set_weights got ",
                 weights.size(), " values but the model has ", count_params(), " parameters");
  std::vector<float> flat(param_count_, 0.0f);
  size_t next = 0;
  for (const auto& layer : layer_params_)
    for (const ParamSlot& p : layer) {
      std::memcpy(flat.data() + p.offset, weights.data() + next, p.count * sizeof(float));
      next += p.count;
    }
  strategy_->run([&](int r) {
    strategy_->backend(r).upload(flat.data(), replicas_[static_cast<size_t>(r)]->params.data(), param_count_ * sizeof(float));
    strategy_->backend(r).synchronize();
  });
}

bool Sequential::replicas_identical() {
  require_compiled("replicas_identical");
  std::vector<std::vector<float>> copies(replicas_.size(), std::vector<float>(param_count_));
  strategy_->run([&](int r) {
    strategy_->backend(r).download(replicas_[static_cast<size_t>(r)]->params.data(), copies[static_cast<size_t>(r)].data(),
                                   param_count_ * sizeof(float));
  });
  for (size_t r = 1; r < copies.size(); ++r)
    if (std::memcmp(copies[r].data(), copies[0].data(), param_count_ * sizeof(float)) != 0) return false;
  return true;
}

}  // namespace mirror
