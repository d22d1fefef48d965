// Plan: what a model graph becomes before it runs (private to model/). One pass over the graph
// orders the nodes, decides the fusions, lays every variable out in the replicas' flat buffers,
// and assigns every activation and gradient a buffer, sized per sample, so that a replica
// allocates them once per batch capacity and nothing in the steady state.
//
// Tensor t is the output of node t (nodes are in topological order, the input first). Gradients
// flow only where they are needed (towards trainable variables); a tensor read by several nodes
// gets the sum of their gradients: the first consumer to run backward writes it, the others add.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mirror/model/graph.hpp"
#include "mirror/model/losses.hpp"

namespace mirror {

// A variable's place in a replica's flat buffers.
struct VariableSlot {
  int node = 0;             // the node whose layer owns it
  int index = 0;            // its position in the layer's variables()
  VariableSpec spec;
  std::string path;         // Keras's path: "conv2d/kernel"
  size_t offset = 0;        // into the trainable or the non-trainable buffer
  size_t count = 0;
};

// How one input edge of a node receives its gradient in backward.
enum class GradTarget {
  None,        // nothing upstream needs it
  Write,       // the node writes the input's gradient buffer (it is the first to run backward)
  Accumulate,  // the node adds into it (the layer supports accumulate)
  Scratch,     // the node writes the shared scratch gradient, then the runtime adds it in
};

struct PlannedNode {
  LayerPtr layer;                        // null for the input node
  std::vector<int> inputs;               // tensor ids
  std::vector<GradTarget> grad_targets;  // per input
  Fusion fusion;
  // The output is the input's memory, and so is its gradient: a reshape, or a max pooling that
  // the convolution before it runs (Fusion::pooled_by_input). No op runs for it.
  bool aliases_input = false;
  int64_t output_floats = 0;             // per sample: the output's size, or the pooled size for a
                                         // convolution that runs the pooling after it
  std::vector<int> variables;            // indices into Plan::variables, in the layer's order
  int value_buffer = -1;                 // where its output lives (shared with the input for a reshape)
  int grad_buffer = -1;                  // where dL/d(output) lives, -1 when no gradient flows to it
  size_t scratch_floats_per_row = 0;     // the layer's scratch_floats(1) - scratch_floats(0)
  size_t scratch_floats_fixed = 0;       // the layer's scratch_floats(0)
  size_t trainable_ready = 0;            // trainable gradients [0, trainable_ready) are final after its backward
};

struct Plan {
  std::vector<PlannedNode> nodes;            // topological order; node 0 is the model's input
  int output = 0;                            // the output tensor
  Shape input_shape, output_shape;           // per sample
  std::vector<int64_t> value_floats;         // per value buffer: floats per sample
  std::vector<int64_t> grad_floats;          // per gradient buffer: floats per sample
  int64_t scratch_grad_floats = 0;           // per sample, for GradTarget::Scratch edges
  std::vector<VariableSlot> variables;       // Keras's order: nodes in order, each layer's variables in order
  size_t trainable_floats = 0;               // padded length of the flat trainable buffer
  size_t non_trainable_floats = 0;
  LossSpec loss;                             // the loss with the fusion pass's decision applied
  bool output_needs_grad = false;
};

// The layers of the graph from `input` to `output`, in the order their nodes run. Throws
// InvalidArgument for a graph that is not a single-input DAG.
std::vector<LayerPtr> ordered_layers(const Tensor& input, const Tensor& output);
// The nodes themselves in that order, the input first.
std::vector<const Node*> ordered_nodes(const Tensor& input, const Tensor& output);

// Whether the replicas' backends run a convolution and the max pooling after it as one op
// (Backend::fuses_conv2d_max_pool for every replica).
using ConvPoolFusable = std::function<bool(const ConvGeometry&, const PoolGeometry&)>;

// Builds the plan of the graph from `input` to `output` for `loss`. Throws InvalidArgument for a
// graph that is not a single-input, single-output DAG of built layers. Without `fusable` no
// convolution is fused with its pooling.
Plan make_plan(const Tensor& input, const Tensor& output, const Loss& loss, const ConvPoolFusable& fusable = nullptr);

}  // namespace mirror
