// ModelRuntime: replica memory, variable initialisation and one step's work (see runtime.hpp).
#include "mirror/model/runtime.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "mirror/engine/error.hpp"
#include "mirror/model/initializers.hpp"

namespace mirror {
namespace {

constexpr size_t kMaxInputs = 64;  // inputs of one layer call (Concatenate of many branches)

// The trainable variables as the optimizer sees them: their bounds in the flat buffer (in buffer
// order, the first from 0 and the last to its padded end, ParameterSegments' form) and names.
struct TrainableLayout {
  std::vector<int64_t> bounds;
  std::vector<std::string> names;
};

TrainableLayout trainable_layout(const Plan& plan) {
  std::vector<const VariableSlot*> vars;
  for (const VariableSlot& v : plan.variables)
    if (v.spec.trainable) vars.push_back(&v);
  std::sort(vars.begin(), vars.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  TrainableLayout layout;
  for (const VariableSlot* v : vars) {
    layout.bounds.push_back(layout.bounds.empty() ? 0 : static_cast<int64_t>(v->offset));
    layout.names.push_back(v->spec.name);
  }
  layout.bounds.push_back(static_cast<int64_t>(plan.trainable_floats));
  return layout;
}

}  // namespace

struct ModelRuntime::Replica {
  DeviceBuffer params;    // plan.trainable_floats
  DeviceBuffer grads;     // plan.trainable_floats
  DeviceBuffer slots;     // optimizer slots: slot_count * trainable_floats
  DeviceBuffer bounds;    // int64: the trainable variables' bounds in `params` (ParameterSegments)
  DeviceBuffer decay;     // per trainable variable: its weight-decay factor, when some are excluded
  DeviceBuffer scales;    // per trainable variable: its gradient's clipping factor, when clipping by norm
  DeviceBuffer frozen;    // plan.non_trainable_floats
  DeviceBuffer stats;     // stats_width(): one step's loss and metric sums
  DeviceBuffer totals;    // stats_width() + 1: the running totals and the first bad step
  int64_t capacity_rows = 0;
  std::vector<DeviceBuffer> values;  // per value buffer (values[0] is the gathered input)
  std::vector<DeviceBuffer> gradients;  // per gradient buffer
  DeviceBuffer scratch_grad;
  std::vector<DeviceBuffer> scratch;    // per node
  DeviceBuffer labels;                  // (capacity) int32
  std::map<const ImageSet*, std::unique_ptr<ResidentImages>> resident;
  std::vector<std::vector<float*>> vars, var_grads;  // per node, in the layer's variables() order
  // Pointers handed to layers, kept here so a step allocates nothing.
  std::vector<const float*> in;
  std::vector<float*> dx;
};

ModelRuntime::ModelRuntime(Plan plan, Strategy& strategy, OptimizerPtr optimizer, Loss loss,
                           std::vector<Metric> metrics, uint64_t seed)
    : plan_(std::move(plan)), strategy_(&strategy), optimizer_(std::move(optimizer)), loss_(std::move(loss)),
      metrics_(std::move(metrics)), seed_(seed), host_totals_(stats_width() + 1, 0.0f) {
  host_totals_.back() = -1.0f;
  for (int r = 0; r < strategy.num_replicas(); ++r) contexts_.emplace_back(strategy, r);
  step_ns_.assign(contexts_.size(), 0);
  name_spans();
  initialize_variables(seed);
}

void ModelRuntime::name_spans() {
  Tracer& t = strategy_->tracer();
  spans_.step = t.name_id("train step", "step");
  spans_.evaluate = t.name_id("evaluation step", "step");
  spans_.gather = t.name_id("gather batch", "gather");
  spans_.loss = t.name_id("loss and metrics", "loss");
  spans_.reduce_wait = t.name_id("wait for all-reduce", "all_reduce_wait");
  spans_.optimizer = t.name_id("optimizer", "optimizer");
  spans_.read_totals = t.name_id("read totals", "read_totals");
  std::vector<std::string> names;
  for (const PlannedNode& node : plan_.nodes) {
    names.push_back(node.layer ? node.layer->name() : std::string("input"));
    // A pooling its convolution runs: the convolution's spans cover both.
    if (node.fusion.pooled_by_input) names[static_cast<size_t>(node.inputs[0])] += " + " + node.layer->name();
  }
  for (const std::string& name : names) {
    spans_.forward.push_back(t.name_id("forward " + name, "forward"));
    spans_.backward.push_back(t.name_id("backward " + name, "backward"));
  }
}

ModelRuntime::~ModelRuntime() {
  // Buffers go back through their backends; wait for queued work first.
  if (replicas_.empty()) return;
  try {
    strategy_->run([&](int r) { strategy_->backend(r).synchronize(); });
  } catch (...) {
  }
}

int64_t ModelRuntime::output_width() const {
  return plan_.nodes[static_cast<size_t>(plan_.output)].layer->output_shape()[0];
}

void ModelRuntime::initialize_variables(uint64_t seed) {
  std::vector<float> trainable(plan_.trainable_floats, 0.0f), frozen(plan_.non_trainable_floats, 0.0f);
  for (const VariableSlot& v : plan_.variables) {
    float* dst = (v.spec.trainable ? trainable.data() : frozen.data()) + v.offset;
    // The stream keeps the values a function of (seed, layer position, variable, element), so
    // they are the same for any device or replica count.
    initialize(v.spec, seed, (static_cast<uint64_t>(v.node - 1) << 8) | static_cast<uint64_t>(v.index), {dst, v.count});
  }
  const size_t slot_floats = static_cast<size_t>(optimizer_->slot_count()) * plan_.trainable_floats;
  // Named references, not a structured binding: clang 14 (the fuzz build) cannot capture those.
  const TrainableLayout layout = trainable_layout(plan_);
  const std::vector<int64_t>& bounds = layout.bounds;
  const std::vector<std::string>& names = layout.names;
  const std::vector<float> decay = optimizer_->decay_factors(names);
  segment_count_ = static_cast<int64_t>(names.size());
  replicas_.clear();
  for (int r = 0; r < strategy_->num_replicas(); ++r) replicas_.push_back(std::make_unique<Replica>());
  strategy_->run([&](int r) {
    Backend& b = strategy_->backend(r);
    Replica& s = *replicas_[static_cast<size_t>(r)];
    const auto floats = [](size_t n) { return n * sizeof(float); };
    s.params = b.allocate(floats(plan_.trainable_floats));
    s.grads = b.allocate(floats(plan_.trainable_floats));
    s.frozen = b.allocate(floats(plan_.non_trainable_floats));
    s.stats = b.allocate(floats(stats_width()));
    s.totals = b.allocate(floats(stats_width() + 1));
    b.fill(s.grads.as<float>(), plan_.trainable_floats, 0.0f);
    if (slot_floats > 0) {
      s.slots = b.allocate(floats(slot_floats));
      b.fill(s.slots.as<float>(), slot_floats, 0.0f);
    }
    s.bounds = b.allocate(bounds.size() * sizeof(int64_t));
    b.upload(bounds.data(), s.bounds.data(), bounds.size() * sizeof(int64_t));
    if (!decay.empty()) {
      s.decay = b.allocate(floats(decay.size()));
      b.upload(decay.data(), s.decay.data(), floats(decay.size()));
    }
    if (optimizer_->clips_by_norm()) s.scales = b.allocate(floats(names.size()));
    s.vars.assign(plan_.nodes.size(), {});
    s.var_grads.assign(plan_.nodes.size(), {});
    for (size_t n = 0; n < plan_.nodes.size(); ++n)
      for (int index : plan_.nodes[n].variables) {
        const VariableSlot& v = plan_.variables[static_cast<size_t>(index)];
        s.vars[n].push_back((v.spec.trainable ? s.params.as<float>() : s.frozen.as<float>()) + v.offset);
        s.var_grads[n].push_back(v.spec.trainable ? s.grads.as<float>() + v.offset : nullptr);
      }
    // Created once on replica 0 and broadcast, so the replicas start identical.
    if (r == 0) {
      b.upload(trainable.data(), s.params.data(), floats(trainable.size()));
      b.upload(frozen.data(), s.frozen.data(), floats(frozen.size()));
    }
    const ReplicaContext& ctx = contexts_[static_cast<size_t>(r)];
    ctx.broadcast({s.params.as<float>(), plan_.trainable_floats});
    ctx.broadcast({s.frozen.as<float>(), plan_.non_trainable_floats});
  });
}

void ModelRuntime::reserve_rows(int64_t rows) {
  if (rows <= replicas_.front()->capacity_rows) return;
  strategy_->run([&](int r) {
    Backend& b = strategy_->backend(r);
    Replica& s = *replicas_[static_cast<size_t>(r)];
    const auto floats = [&](int64_t per_row) { return static_cast<size_t>(rows * per_row) * sizeof(float); };
    s.values.clear();
    for (int64_t per_row : plan_.value_floats) s.values.push_back(b.allocate(floats(per_row)));
    s.gradients.clear();
    for (int64_t per_row : plan_.grad_floats) s.gradients.push_back(b.allocate(floats(per_row)));
    s.scratch_grad = b.allocate(floats(plan_.scratch_grad_floats));
    s.scratch.clear();
    for (const PlannedNode& node : plan_.nodes)
      s.scratch.push_back(b.allocate((node.scratch_floats_fixed + static_cast<size_t>(rows) * node.scratch_floats_per_row) *
                                     sizeof(float)));
    s.labels = b.allocate(static_cast<size_t>(rows) * sizeof(int32_t));
    s.capacity_rows = rows;
  });
}

void ModelRuntime::reset_totals() {
  const size_t width = stats_width();
  strategy_->run([&](int r) {
    Replica& s = *replicas_[static_cast<size_t>(r)];
    strategy_->backend(r).fill(s.totals.as<float>(), width, 0.0f);
    strategy_->backend(r).fill(s.totals.as<float>() + width, 1, -1.0f);
  });
  std::fill(host_totals_.begin(), host_totals_.end(), 0.0f);
  host_totals_.back() = -1.0f;
}

void ModelRuntime::set_totals(std::span<const float> totals) {
  MIRROR_REQUIRE(totals.size() == host_totals_.size(), InvalidArgument, "set_totals got ", totals.size(),
                 " values, the runtime keeps ", host_totals_.size());
  strategy_->run([&](int r) {
    strategy_->backend(r).upload(totals.data(), replicas_[static_cast<size_t>(r)]->totals.data(), totals.size() * sizeof(float));
    strategy_->backend(r).synchronize();
  });
  std::copy(totals.begin(), totals.end(), host_totals_.begin());
}

void ModelRuntime::require_consistent(const char* what) {
  if (!suspect_) return;
  bool same = replicas_identical();
  const std::vector<float> slots = get_slots(0);
  for (int r = 1; same && r < strategy_->num_replicas(); ++r) same = get_slots(r) == slots;
  MIRROR_REQUIRE(same, Error, what, ": the replicas no longer hold the same variables and optimizer state, because a "
                 "training step failed part-way before; load_checkpoint() makes them one model again (or set_weights() "
                 "and compile() again, which starts the optimizer afresh)");
  suspect_ = false;
}

void ModelRuntime::read_totals() {
  strategy_->run([&](int r) {
    if (r != 0) return;
    const TraceScope span(strategy_->tracer(), Strategy::compute_lane(0), spans_.read_totals, iterations_);
    strategy_->backend(r).download(replicas_[0]->totals.data(), host_totals_.data(), host_totals_.size() * sizeof(float));
  });
}

void ModelRuntime::gather(int replica, const ImageSet& data, std::span<const int32_t> share) {
  Replica& s = *replicas_[static_cast<size_t>(replica)];
  auto it = s.resident.find(&data);
  if (it == s.resident.end()) it = s.resident.emplace(&data, strategy_->backend(replica).make_resident(data)).first;
  if (!share.empty())
    strategy_->backend(replica).gather_batch(*it->second, share, s.values[0].as<float>(), s.labels.as<int32_t>());
}

void ModelRuntime::release(const ImageSet& data) {
  for (auto& s : replicas_) s->resident.erase(&data);
}

LayerContext ModelRuntime::context(int replica, bool training, int64_t rows, int64_t first_row,
                                   const StepInfo& step) const {
  const Replica& s = *replicas_[static_cast<size_t>(replica)];
  return LayerContext{.replica = contexts_[static_cast<size_t>(replica)],
                      .backend = strategy_->backend(replica),
                      .training = training,
                      .rows = rows,
                      .global_rows = step.global_rows,
                      .first_row = first_row,
                      .iteration = step.iteration,
                      .seed = seed_,
                      .node = 0,
                      .guard = s.totals.as<float>()};
}

void ModelRuntime::forward(Replica& s, const LayerContext& base) {
  LayerContext ctx = base;
  Tracer& tracer = strategy_->tracer();
  const int lane = Strategy::compute_lane(ctx.replica.replica());
  for (size_t n = 1; n < plan_.nodes.size(); ++n) {
    const PlannedNode& node = plan_.nodes[n];
    if (node.aliases_input) continue;  // the output is the input's memory
    const TraceScope span(tracer, lane, spans_.forward[n], ctx.iteration);
    ctx.node = static_cast<int>(n);
    s.in.clear();
    for (int t : node.inputs) s.in.push_back(s.values[static_cast<size_t>(plan_.nodes[static_cast<size_t>(t)].value_buffer)].as<float>());
    node.layer->forward({ctx, s.in, s.values[static_cast<size_t>(node.value_buffer)].as<float>(), s.vars[n],
                         s.scratch[n].as<float>(), node.fusion});
  }
}

void ModelRuntime::backward(Replica& s, const LayerContext& base, GradientReducer& reducer) {
  LayerContext ctx = base;
  Backend& b = ctx.backend;
  Tracer& tracer = strategy_->tracer();
  const int lane = Strategy::compute_lane(ctx.replica.replica());
  for (size_t n = plan_.nodes.size(); n-- > 1;) {
    const PlannedNode& node = plan_.nodes[n];
    if (node.grad_buffer >= 0) {
      // A reshape (or a pooling its convolution runs) runs no op: no span, as in forward.
      const TraceScope span(node.aliases_input ? nullptr : &tracer, lane, spans_.backward[n], ctx.iteration);
      ctx.node = static_cast<int>(n);
      float* dy = s.gradients[static_cast<size_t>(node.grad_buffer)].as<float>();
      const auto grad_of = [&](int t) {
        return s.gradients[static_cast<size_t>(plan_.nodes[static_cast<size_t>(t)].grad_buffer)].as<float>();
      };
      if (node.aliases_input) {
        // No op ran forward; the gradient is dy itself, passed on (shared memory) or added.
        const int t = node.inputs[0];
        const size_t count = static_cast<size_t>(ctx.rows * node.output_floats);
        if (node.grad_targets[0] == GradTarget::Write && grad_of(t) != dy) b.copy(dy, grad_of(t), count);
        if (node.grad_targets[0] == GradTarget::Accumulate) b.add(count, grad_of(t), dy, grad_of(t));
      } else {
        MIRROR_REQUIRE(node.inputs.size() <= kMaxInputs, InvalidArgument, "layer '", node.layer->name(), "' has more than ",
                       kMaxInputs, " inputs");
        bool accumulate[kMaxInputs] = {};
        s.in.clear();
        s.dx.clear();
        for (size_t i = 0; i < node.inputs.size(); ++i) {
          const int t = node.inputs[i];
          s.in.push_back(s.values[static_cast<size_t>(plan_.nodes[static_cast<size_t>(t)].value_buffer)].as<float>());
          const GradTarget target = node.grad_targets[i];
          s.dx.push_back(target == GradTarget::None      ? nullptr
                         : target == GradTarget::Scratch ? s.scratch_grad.as<float>()
                                                         : grad_of(t));
          accumulate[i] = target == GradTarget::Accumulate;
        }
        node.layer->backward({ctx, s.in, s.values[static_cast<size_t>(node.value_buffer)].as<float>(), dy, s.dx,
                              std::span<const bool>(accumulate, node.inputs.size()), s.vars[n], s.var_grads[n],
                              s.scratch[n].as<float>(), node.fusion});
        for (size_t i = 0; i < node.inputs.size(); ++i) {
          if (node.grad_targets[i] != GradTarget::Scratch) continue;
          const int t = node.inputs[i];
          const size_t count = static_cast<size_t>(ctx.rows * plan_.nodes[static_cast<size_t>(t)].output_floats);
          b.add(count, grad_of(t), s.scratch_grad.as<float>(), grad_of(t));
        }
      }
    }
    reducer.mark_ready(ctx.replica, s.grads.as<float>(), node.trainable_ready);
  }
}

void ModelRuntime::train_step(int replica, const ImageSet& data, std::span<const int32_t> share, int64_t first_row,
                              const StepInfo& step, GradientReducer& reducer) {
  Replica& s = *replicas_[static_cast<size_t>(replica)];
  Backend& b = strategy_->backend(replica);
  Tracer& tracer = strategy_->tracer();
  const int lane = Strategy::compute_lane(replica);
  const int64_t begin_ns = Tracer::now_ns();
  const TraceScope step_span(tracer, lane, spans_.step, step.iteration);
  const auto rows = static_cast<int64_t>(share.size());
  const LayerContext ctx = context(replica, true, rows, first_row, step);
  const size_t width = stats_width();
  reducer.begin(ctx.replica, step.iteration);
  b.fill(s.stats.as<float>(), width, 0.0f);
  // An empty share adds nothing to the sums; its layers still run (with no rows) so that every
  // replica issues the same collectives.
  if (rows == 0) b.fill(s.grads.as<float>(), plan_.trainable_floats, 0.0f);
  {
    const TraceScope span(tracer, lane, spans_.gather, step.iteration);
    gather(replica, data, share);
  }
  forward(s, ctx);
  const float* outputs = s.values[static_cast<size_t>(plan_.nodes[static_cast<size_t>(plan_.output)].value_buffer)].as<float>();
  const int64_t width_out = output_width();
  float* doutput = plan_.output_needs_grad
                       ? s.gradients[static_cast<size_t>(plan_.nodes[static_cast<size_t>(plan_.output)].grad_buffer)].as<float>()
                       : nullptr;
  if (rows > 0) {
    const TraceScope span(tracer, lane, spans_.loss, step.iteration);
    // Each replica scales its summed loss by 1 / global batch: the all-reduce then gives the
    // gradient of the mean over the global batch, however it was split.
    b.loss(plan_.loss, rows, width_out, outputs, s.labels.as<int32_t>(), 1.0f / static_cast<float>(step.global_rows),
           doutput, s.stats.as<float>());
    for (size_t m = 0; m < metrics_.size(); ++m)
      b.metric(metrics_[m].spec(), rows, width_out, outputs, s.labels.as<int32_t>(), s.stats.as<float>() + 1 + m);
  }
  ctx.replica.step_phase(StepPhase::BackwardBegin);
  backward(s, ctx, reducer);
  ctx.replica.step_phase(StepPhase::BackwardEnd);
  {
    const TraceScope span(tracer, lane, spans_.reduce_wait, step.iteration);
    reducer.finish(ctx.replica, s.grads.as<float>(), {s.stats.as<float>(), width});
  }
  {
    const TraceScope span(tracer, lane, spans_.optimizer, step.iteration);
    update(replica, ctx, step);
  }
  if (replica == 0 && step.read_totals) {
    const TraceScope span(tracer, lane, spans_.read_totals, step.iteration);
    b.download(s.totals.data(), host_totals_.data(), host_totals_.size() * sizeof(float));
  }
  step_ns_[static_cast<size_t>(replica)] = Tracer::now_ns() - begin_ns;
}

void ModelRuntime::update(int replica, const LayerContext& ctx, const StepInfo& step) {
  Replica& s = *replicas_[static_cast<size_t>(replica)];
  Backend& b = ctx.backend;
  // Every replica keeps the same totals; once a loss is not finite they stop the optimizer (and
  // the non-trainable updates) for the rest of the epoch without the host looking at every step.
  b.accumulate_stats(stats_width(), s.stats.as<float>(), s.totals.as<float>(), step.step);
  // After finish(), so clipping by the global norm sees the all-reduced gradient: every replica
  // holds the same sums and computes the same factors.
  optimizer_->apply(b, step.iteration, step.learning_rate,
                    {.count = plan_.trainable_floats,
                     .params = s.params.as<float>(),
                     .grads = s.grads.as<float>(),
                     .slots = s.slots.as<float>(),
                     .guard = s.totals.as<float>(),
                     .segments = {.count = segment_count_,
                                  .bounds = s.bounds.as<int64_t>(),
                                  .decay = s.decay.as<float>()},
                     .scales = s.scales.as<float>()});
  LayerContext layer = ctx;
  for (size_t n = 1; n < plan_.nodes.size(); ++n) {
    layer.node = static_cast<int>(n);
    plan_.nodes[n].layer->update_state({layer, {}, nullptr, s.vars[n], s.scratch[n].as<float>()});
  }
}

void ModelRuntime::evaluate_step(int replica, const ImageSet& data, std::span<const int32_t> share, int64_t first_row,
                                 const StepInfo& step) {
  Replica& s = *replicas_[static_cast<size_t>(replica)];
  Backend& b = strategy_->backend(replica);
  const TraceScope step_span(strategy_->tracer(), Strategy::compute_lane(replica), spans_.evaluate, step.iteration);
  const auto rows = static_cast<int64_t>(share.size());
  const LayerContext ctx = context(replica, false, rows, first_row, step);
  const size_t width = stats_width();
  b.fill(s.stats.as<float>(), width, 0.0f);
  gather(replica, data, share);
  forward(s, ctx);
  if (rows > 0) {
    const float* outputs =
        s.values[static_cast<size_t>(plan_.nodes[static_cast<size_t>(plan_.output)].value_buffer)].as<float>();
    LossSpec spec = plan_.loss;
    spec.gradient_through_activation = false;
    b.loss(spec, rows, output_width(), outputs, s.labels.as<int32_t>(), 1.0f, nullptr, s.stats.as<float>());
    for (size_t m = 0; m < metrics_.size(); ++m)
      b.metric(metrics_[m].spec(), rows, output_width(), outputs, s.labels.as<int32_t>(), s.stats.as<float>() + 1 + m);
  }
  ctx.replica.all_reduce_sum({s.stats.as<float>(), width}, "evaluation all_reduce");
  b.accumulate_stats(width, s.stats.as<float>(), s.totals.as<float>(), step.step);
  if (replica == 0 && step.read_totals) b.download(s.totals.data(), host_totals_.data(), host_totals_.size() * sizeof(float));
}

void ModelRuntime::predict_step(int replica, const ImageSet& data, std::span<const int32_t> share, int64_t first_row,
                                int64_t global_rows, float* out) {
  Replica& s = *replicas_[static_cast<size_t>(replica)];
  const auto rows = static_cast<int64_t>(share.size());
  const LayerContext ctx = context(replica, false, rows, first_row, {.global_rows = global_rows});
  gather(replica, data, share);
  forward(s, ctx);
  const float* outputs = s.values[static_cast<size_t>(plan_.nodes[static_cast<size_t>(plan_.output)].value_buffer)].as<float>();
  strategy_->backend(replica).download(outputs, out, static_cast<size_t>(rows * output_width()) * sizeof(float));
}

std::vector<float> ModelRuntime::get_weights(int replica) {
  MIRROR_REQUIRE(replica >= 0 && replica < strategy_->num_replicas(), InvalidArgument, "replica ", replica,
                 " does not exist; the strategy has ", strategy_->num_replicas());
  std::vector<float> trainable(plan_.trainable_floats), frozen(plan_.non_trainable_floats);
  strategy_->run([&](int r) {
    if (r != replica) return;
    Replica& s = *replicas_[static_cast<size_t>(r)];
    strategy_->backend(r).download(s.params.data(), trainable.data(), trainable.size() * sizeof(float));
    strategy_->backend(r).download(s.frozen.data(), frozen.data(), frozen.size() * sizeof(float));
  });
  std::vector<float> weights;
  for (const VariableSlot& v : plan_.variables) {
    const float* src = (v.spec.trainable ? trainable.data() : frozen.data()) + v.offset;
    weights.insert(weights.end(), src, src + v.count);
  }
  return weights;
}

void ModelRuntime::set_weights(std::span<const float> weights) {
  size_t total = 0;
  for (const VariableSlot& v : plan_.variables) total += v.count;
  MIRROR_REQUIRE(weights.size() == total, InvalidArgument, "set_weights got ", weights.size(),
                 " values but the model's variables hold ", total);
  std::vector<float> trainable(plan_.trainable_floats, 0.0f), frozen(plan_.non_trainable_floats, 0.0f);
  size_t next = 0;
  for (const VariableSlot& v : plan_.variables) {
    float* dst = (v.spec.trainable ? trainable.data() : frozen.data()) + v.offset;
    std::memcpy(dst, weights.data() + next, v.count * sizeof(float));
    next += v.count;
  }
  strategy_->run([&](int r) {
    Replica& s = *replicas_[static_cast<size_t>(r)];
    strategy_->backend(r).upload(trainable.data(), s.params.data(), trainable.size() * sizeof(float));
    strategy_->backend(r).upload(frozen.data(), s.frozen.data(), frozen.size() * sizeof(float));
    strategy_->backend(r).synchronize();
  });
}

std::vector<float> ModelRuntime::get_slots(int replica) {
  std::vector<float> slots(static_cast<size_t>(optimizer_->slot_count()) * plan_.trainable_floats);
  if (slots.empty()) return slots;
  strategy_->run([&](int r) {
    if (r == replica) strategy_->backend(r).download(replicas_[static_cast<size_t>(r)]->slots.data(), slots.data(), slots.size() * sizeof(float));
  });
  return slots;
}

void ModelRuntime::set_slots(std::span<const float> slots) {
  const size_t total = static_cast<size_t>(optimizer_->slot_count()) * plan_.trainable_floats;
  MIRROR_REQUIRE(slots.size() == total, InvalidArgument, "set_slots got ", slots.size(), " values, the optimizer keeps ", total);
  if (slots.empty()) return;
  strategy_->run([&](int r) {
    strategy_->backend(r).upload(slots.data(), replicas_[static_cast<size_t>(r)]->slots.data(), total * sizeof(float));
    strategy_->backend(r).synchronize();
  });
}

bool ModelRuntime::replicas_identical() {
  const size_t n = plan_.trainable_floats + plan_.non_trainable_floats;
  std::vector<std::vector<float>> copies(replicas_.size(), std::vector<float>(n));
  strategy_->run([&](int r) {
    Replica& s = *replicas_[static_cast<size_t>(r)];
    float* dst = copies[static_cast<size_t>(r)].data();
    strategy_->backend(r).download(s.params.data(), dst, plan_.trainable_floats * sizeof(float));
    strategy_->backend(r).download(s.frozen.data(), dst + plan_.trainable_floats, plan_.non_trainable_floats * sizeof(float));
  });
  for (size_t r = 1; r < copies.size(); ++r)
    if (std::memcmp(copies[r].data(), copies[0].data(), n * sizeof(float)) != 0) return false;
  return true;
}

}  // namespace mirror
