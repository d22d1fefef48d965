// Private to model/: what Sequential keeps for each replica. All buffers are on the replica's
// device, allocated at compile time (parameters, gradients, slots) or when a larger batch share
// first appears (activations); nothing is allocated in the steady state.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "engine/backend.hpp"
#include "model/sequential.hpp"

namespace mirror {

// Where a step's loss and metric ops accumulate: {loss sum, correct count}.
inline constexpr int kStatCount = 2;
// An epoch's running totals on the device: {loss sum, correct count, first step whose loss was not
// finite (-1 while there is none)}. See Backend::accumulate_stats.
inline constexpr int kTotalCount = kStatCount + 1;

struct Sequential::ParamSlot {
  size_t offset = 0;  // into the flat parameter (and gradient, and each slot) buffer
  size_t count = 0;
};

struct Sequential::ReplicaState {
  DeviceBuffer params;        // param_count_ floats
  DeviceBuffer grads;         // param_count_ gradients, then kStatCount loss statistics
  DeviceBuffer slots;         // optimizer slots: slot_count * param_count_ floats
  DeviceBuffer eval_stats;    // kStatCount floats: one evaluation batch's global statistics
  DeviceBuffer totals;        // kTotalCount floats: the running epoch (or evaluation)
  int64_t capacity_rows = 0;  // rows the activation buffers below can hold
  DeviceBuffer input;         // (capacity, input shape)
  DeviceBuffer labels;        // (capacity) int32
  std::vector<DeviceBuffer> outputs;   // per layer (empty for reshape layers)
  std::vector<float*> act;             // act[0] = input, act[i + 1] = layer i's output
  DeviceBuffer delta[2];               // ping-pong gradients of activations
  std::map<const ImageSet*, std::unique_ptr<ResidentImages>> resident;
  float host_totals[kTotalCount] = {0, 0, -1};  // replica 0: totals as last read

  // Views of layer l's parameters and gradients, in ParamSpec order.
  std::vector<std::vector<float*>> param_views, grad_views;

  float* stats(size_t stats_offset) const { return grads.as<float>() + stats_offset; }
};

}  // namespace mirror
