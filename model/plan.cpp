// make_plan: ordering, fusion, variable layout and buffer assignment (see plan.hpp).
#include "mirror/model/plan.hpp"

#include <algorithm>
#include <functional>
#include <map>
#include <unordered_map>

#include "mirror/engine/error.hpp"

namespace mirror {
namespace {

constexpr size_t kAlignFloats = 16;  // 64-byte alignment of every variable in the flat buffers

size_t align_up(size_t n) { return (n + kAlignFloats - 1) / kAlignFloats * kAlignFloats; }

// Nodes reachable from `output`, inputs before the nodes that read them, `input` first: the
// post-order of a depth-first walk from the output that takes each node's inputs in order. The
// walk keeps its own stack: a model 100,000 layers deep would overflow the call stack.
std::vector<const Node*> topological_order(const Tensor& input, const Tensor& output) {
  std::vector<const Node*> order{input.node().get()};
  std::unordered_map<const Node*, int> state;  // 1: on the stack, 2: done
  state[input.node().get()] = 2;
  std::vector<std::pair<const Node*, size_t>> stack;  // a node and its next input to visit
  const auto enter = [&](const Node* n) {
    int& s = state[n];
    if (s == 2) return;
    MIRROR_REQUIRE(s != 1, InvalidArgument, "the model graph has a cycle through layer '", n->layer->name(), "'");
    s = 1;
    MIRROR_REQUIRE(n->layer != nullptr, InvalidArgument, "the model's output depends on an input ('", n->input_name,
                   "') that is not the model's input: Mirror trains models with one input");
    stack.emplace_back(n, 0);
  };
  enter(output.node().get());
  while (!stack.empty()) {
    auto& [n, next] = stack.back();
    if (next < n->inputs.size()) {
      enter(n->inputs[next++].node().get());  // may grow the stack: `n` and `next` are not used after
      continue;
    }
    state[n] = 2;
    order.push_back(n);
    stack.pop_back();
  }
  return order;
}

// Each layer's variables: the trainable ones laid out from the last node back (backward produces
// their gradients in that order), the others from the first node on.
void lay_out_variables(Plan& plan) {
  for (size_t n = 0; n < plan.nodes.size(); ++n) {
    PlannedNode& node = plan.nodes[n];
    if (!node.layer) continue;
    const auto specs = node.layer->variables();
    for (size_t k = 0; k < specs.size(); ++k) {
      VariableSlot slot;
      slot.node = static_cast<int>(n);
      slot.index = static_cast<int>(k);
      slot.spec = specs[k];
      slot.path = node.layer->name() + "/" + specs[k].name;
      slot.count = static_cast<size_t>(specs[k].shape.count());
      node.variables.push_back(static_cast<int>(plan.variables.size()));
      plan.variables.push_back(std::move(slot));
    }
  }
  size_t trainable = 0, frozen = 0;
  for (size_t n = plan.nodes.size(); n-- > 0;)
    for (int v : plan.nodes[n].variables) {
      VariableSlot& slot = plan.variables[static_cast<size_t>(v)];
      if (!slot.spec.trainable) continue;
      slot.offset = trainable;
      trainable += align_up(slot.count);
    }
  for (VariableSlot& slot : plan.variables) {
    if (slot.spec.trainable) continue;
    slot.offset = frozen;
    frozen += align_up(slot.count);
  }
  plan.trainable_floats = trainable;
  plan.non_trainable_floats = frozen;
  // After node n's backward every node from n on is done: their gradients are [0, first offset of
  // the nearest earlier node with trainable variables).
  size_t ready = trainable;
  for (size_t n = 0; n < plan.nodes.size(); ++n) {
    plan.nodes[n].trainable_ready = ready;
    for (int v : plan.nodes[n].variables) {
      const VariableSlot& slot = plan.variables[static_cast<size_t>(v)];
      if (slot.spec.trainable) ready = std::min(ready, slot.offset);
    }
  }
}

bool has_trainable(const Plan& plan, const PlannedNode& node) {
  for (int v : node.variables)
    if (plan.variables[static_cast<size_t>(v)].spec.trainable) return true;
  return false;
}

// Fusions, each decided by looking at a node and its consumers.
void fuse(Plan& plan, const std::vector<std::vector<std::pair<int, int>>>& consumers, const ConvPoolFusable& fusable) {
  for (size_t p = 1; p < plan.nodes.size(); ++p) {
    PlannedNode& producer = plan.nodes[p];
    if (static_cast<int>(p) == plan.output || consumers[p].size() != 1) continue;
    const auto [c, i] = consumers[p].front();
    PlannedNode& consumer = plan.nodes[static_cast<size_t>(c)];
    // A convolution (ReLU or no activation) and the max pooling that alone reads it, where the
    // backends run the two as one op: the convolution's output is never stored.
    const ConvGeometry* conv = producer.layer->poolable_conv();
    const PoolGeometry* pool = consumer.layer->max_pool_geometry();
    if (fusable && conv && pool && fusable(*conv, *pool)) {
      producer.fusion.pools = true;
      producer.fusion.pool = *pool;
      producer.output_floats = consumer.output_floats;
      producer.scratch_floats_per_row += Layer::argmax_floats_per_row(consumer.output_floats);
      consumer.fusion.pooled_by_input = true;
      consumer.aliases_input = true;
      continue;
    }
    if (producer.layer->activation() != Activation::ReLU) continue;
    if (!consumer.layer->absorbs_input_relu() || consumer.grad_targets[static_cast<size_t>(i)] != GradTarget::Write) continue;
    // Max pooling after a ReLU: its backward writes (x > 0) * unpool(dy), one pass instead of two.
    consumer.fusion.input_is_relu = true;
    producer.fusion.activation_done = true;
  }
  PlannedNode& out = plan.nodes[static_cast<size_t>(plan.output)];
  if (!out.layer || plan.loss.from_logits) return;
  const Activation a = out.layer->activation();
  const bool categorical = plan.loss.kind == LossKind::SparseCategoricalCrossentropy ||
                           plan.loss.kind == LossKind::CategoricalCrossentropy;
  if ((a == Activation::Softmax && categorical) || (a == Activation::Sigmoid && plan.loss.kind == LossKind::BinaryCrossentropy)) {
    // The loss takes its gradient through the activation: scale * (p - t) at the logits.
    plan.loss.gradient_through_activation = true;
    out.fusion.activation_done = true;
  }
}

// Gradient buffers by lifetime: a group (a tensor's gradient, with the reshapes that share it) is
// live from the backward of its first writer to that of its reader; buffers are reused best-fit.
void assign_gradient_buffers(Plan& plan, const std::vector<std::vector<std::pair<int, int>>>& consumers,
                             const std::vector<bool>& needs_grad) {
  const int count = static_cast<int>(plan.nodes.size());
  std::vector<int> group(static_cast<size_t>(count), -1);
  std::vector<int> start, end;  // per group, in backward time (node n runs at count - 1 - n; the loss at -1)
  std::vector<int64_t> size;
  for (int t = count; t-- > 0;) {
    if (!needs_grad[static_cast<size_t>(t)] && !(t == plan.output && plan.output_needs_grad)) continue;
    const PlannedNode& node = plan.nodes[static_cast<size_t>(t)];
    const int64_t floats = node.layer ? node.output_floats : 0;
    int first_write = t == plan.output ? -1 : count;
    for (auto [c, i] : consumers[static_cast<size_t>(t)]) first_write = std::min(first_write, count - 1 - c);
    const int read = count - 1 - t;
    // A tensor read only by a reshape (Flatten after a convolution), or by a pooling its
    // convolution runs, shares the reader's gradient: the same floats, so backward copies nothing.
    const auto& cons = consumers[static_cast<size_t>(t)];
    if (cons.size() == 1 && t != plan.output) {
      const PlannedNode& c = plan.nodes[static_cast<size_t>(cons[0].first)];
      const int g = group[static_cast<size_t>(cons[0].first)];
      if (c.aliases_input && g >= 0) {
        group[static_cast<size_t>(t)] = g;
        end[static_cast<size_t>(g)] = read;
        size[static_cast<size_t>(g)] = std::max(size[static_cast<size_t>(g)], floats);
        continue;
      }
    }
    group[static_cast<size_t>(t)] = static_cast<int>(start.size());
    start.push_back(first_write);
    end.push_back(read);
    size.push_back(floats);
  }
  // Sweep backward time; at each moment allocate the groups that start, then free those that end.
  std::vector<int> buffer_of(start.size(), -1);
  std::vector<bool> busy;
  for (int time = -1; time < count; ++time) {
    for (size_t g = 0; g < start.size(); ++g) {
      if (start[g] != time) continue;
      int best = -1;
      for (size_t b = 0; b < plan.grad_floats.size(); ++b) {
        if (busy[b]) continue;
        const bool fits = plan.grad_floats[b] >= size[g];
        if (best < 0) { best = static_cast<int>(b); continue; }
        const int64_t have = plan.grad_floats[static_cast<size_t>(best)];
        const bool best_fits = have >= size[g];
        if ((fits && (!best_fits || plan.grad_floats[b] < have)) || (!fits && !best_fits && plan.grad_floats[b] > have))
          best = static_cast<int>(b);
      }
      if (best < 0) {
        best = static_cast<int>(plan.grad_floats.size());
        plan.grad_floats.push_back(0);
        busy.push_back(false);
      }
      plan.grad_floats[static_cast<size_t>(best)] = std::max(plan.grad_floats[static_cast<size_t>(best)], size[g]);
      busy[static_cast<size_t>(best)] = true;
      buffer_of[g] = best;
    }
    for (size_t g = 0; g < end.size(); ++g)
      if (end[g] == time && buffer_of[g] >= 0) busy[static_cast<size_t>(buffer_of[g])] = false;
  }
  for (int t = 0; t < count; ++t)
    if (group[static_cast<size_t>(t)] >= 0) plan.nodes[static_cast<size_t>(t)].grad_buffer = buffer_of[static_cast<size_t>(group[static_cast<size_t>(t)])];
}

}  // namespace

std::vector<const Node*> ordered_nodes(const Tensor& input, const Tensor& output) {
  return topological_order(input, output);
}

std::vector<LayerPtr> ordered_layers(const Tensor& input, const Tensor& output) {
  std::vector<LayerPtr> layers;
  for (const Node* n : topological_order(input, output))
    if (n->layer) layers.emplace_back(n->layer);
  return layers;
}

Plan make_plan(const Tensor& input, const Tensor& output, const Loss& loss, const ConvPoolFusable& fusable) {
  MIRROR_REQUIRE(input.valid() && output.valid(), InvalidArgument, "a model needs an input and an output tensor");
  MIRROR_REQUIRE(input.node()->layer == nullptr, InvalidArgument, "a model's input must come from Input()");
  MIRROR_REQUIRE(output.node() != input.node(), InvalidArgument, "the model's output is its input: add layers between them");
  const std::vector<const Node*> order = topological_order(input, output);
  std::map<const Node*, int> index;
  for (size_t n = 0; n < order.size(); ++n) index[order[n]] = static_cast<int>(n);

  Plan plan;
  plan.loss = loss.spec();
  plan.output = static_cast<int>(order.size()) - 1;
  plan.input_shape = input.shape();
  plan.output_shape = output.shape();
  plan.nodes.resize(order.size());
  std::vector<std::vector<std::pair<int, int>>> consumers(order.size());  // per tensor: (node, input slot)
  for (size_t n = 0; n < order.size(); ++n) {
    PlannedNode& node = plan.nodes[n];
    node.layer = order[n]->layer;
    for (size_t i = 0; i < order[n]->inputs.size(); ++i) {
      const int t = index.at(order[n]->inputs[i].node().get());
      node.inputs.push_back(t);
      consumers[static_cast<size_t>(t)].push_back({static_cast<int>(n), static_cast<int>(i)});
    }
    node.grad_targets.assign(node.inputs.size(), GradTarget::None);
    node.output_floats = node.layer ? node.layer->output_shape().count() : input.shape().count();
    node.aliases_input = node.layer && node.layer->is_reshape();
    if (node.layer) {
      const size_t fixed = node.layer->scratch_floats(0);
      node.scratch_floats_fixed = fixed;
      node.scratch_floats_per_row = node.layer->scratch_floats(1) - fixed;
    }
  }
  lay_out_variables(plan);

  // A tensor needs a gradient when a trainable variable lies at or before its producer.
  std::vector<bool> needs_grad(order.size(), false);
  for (size_t n = 1; n < order.size(); ++n) {
    bool needed = has_trainable(plan, plan.nodes[n]);
    for (int t : plan.nodes[n].inputs) needed = needed || needs_grad[static_cast<size_t>(t)];
    needs_grad[n] = needed;
  }
  plan.output_needs_grad = needs_grad[static_cast<size_t>(plan.output)];

  // The first consumer to run backward (the latest node; the first slot of a node that reads the
  // tensor twice) writes the gradient; the others add to it.
  for (size_t t = 0; t < order.size(); ++t) {
    if (!needs_grad[t]) continue;
    auto edges = consumers[t];
    std::sort(edges.begin(), edges.end(), [](auto a, auto b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
    for (size_t e = 0; e < edges.size(); ++e) {
      PlannedNode& c = plan.nodes[static_cast<size_t>(edges[e].first)];
      GradTarget& target = c.grad_targets[static_cast<size_t>(edges[e].second)];
      if (e == 0) {
        target = GradTarget::Write;
      } else if (c.layer->accumulates_dx() || c.layer->is_reshape()) {
        target = GradTarget::Accumulate;  // a reshape's gradient is added by the runtime
      } else {
        target = GradTarget::Scratch;
        plan.scratch_grad_floats = std::max(plan.scratch_grad_floats, plan.nodes[t].output_floats);
      }
    }
  }

  fuse(plan, consumers, fusable);
  // Values: each node's output has a buffer of its own (backward reads them); a reshape, and a
  // pooling its convolution runs, share their input's.
  plan.value_floats.push_back(input.shape().count());
  plan.nodes[0].value_buffer = 0;
  for (size_t n = 1; n < order.size(); ++n) {
    PlannedNode& node = plan.nodes[n];
    if (node.aliases_input) {
      node.value_buffer = plan.nodes[static_cast<size_t>(node.inputs.at(0))].value_buffer;
    } else {
      node.value_buffer = static_cast<int>(plan.value_floats.size());
      plan.value_floats.push_back(node.output_floats);
    }
  }
  assign_gradient_buffers(plan, consumers, needs_grad);
  return plan;
}

}  // namespace mirror
