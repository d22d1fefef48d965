// Running one backend op on two backends from the same host inputs and comparing the outputs:
// what the GPU suites check every CUDA op with. Outputs are poisoned with NaN first (unless given
// a starting value), so an element an op forgot to write fails; tolerance |gpu - host| <=
// 1e-4 |host| + 1e-5 max|host|.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "mirror/engine/backend.hpp"
#include "op_test_util.hpp"
#include "test_util.hpp"

namespace mirror::testing {

// |gpu - host| <= 1e-4 |host| + 1e-5 max|host|, printing the first mismatches. NaN matches only
// NaN (a poisoned loss must be poisoned on both).
inline void expect_matches(const std::string& what, Floats gpu, Floats host) {
  ASSERT_EQ(gpu.size(), host.size()) << what;
  double scale = 0;
  for (size_t i = 0; i < host.size(); ++i) {
    if (std::isnan(gpu[i]) && std::isnan(host[i])) gpu[i] = host[i] = 0.0f;
    if (std::isfinite(host[i])) scale = std::max(scale, std::fabs(double(host[i])));
  }
  EXPECT_TRUE(all_close(gpu, host, 1e-4, 1e-5 * scale)) << what;
}

// The inputs of one op call and the sizes of its outputs; run() gives back the outputs.
struct OpCall {
  using Op = std::function<void(Backend&, const std::vector<float*>& in, const std::vector<float*>& out,
                                int32_t* labels)>;
  std::vector<Floats> inputs;
  std::vector<size_t> output_counts;
  std::vector<int32_t> labels;  // optional int32 input
  Op op;

  // `initial` gives outputs a starting value (in-place ops, accumulators); NaN otherwise.
  std::vector<Floats> run(Backend& b, const std::vector<Floats>& initial = {}) const {
    std::vector<DeviceBuffer> buffers;
    std::vector<float*> in, out;
    for (const Floats& v : inputs) {
      buffers.push_back(b.allocate(v.size() * sizeof(float)));
      b.upload(v.data(), buffers.back().data(), v.size() * sizeof(float));
      in.push_back(buffers.back().as<float>());
    }
    for (size_t k = 0; k < output_counts.size(); ++k) {
      buffers.push_back(b.allocate(output_counts[k] * sizeof(float)));
      if (k < initial.size())
        b.upload(initial[k].data(), buffers.back().data(), output_counts[k] * sizeof(float));
      else
        b.fill(buffers.back().as<float>(), output_counts[k], kNaN);
      out.push_back(buffers.back().as<float>());
    }
    DeviceBuffer label_buffer = b.allocate(labels.size() * sizeof(int32_t));
    if (!labels.empty()) b.upload(labels.data(), label_buffer.data(), labels.size() * sizeof(int32_t));
    op(b, in, out, label_buffer.as<int32_t>());
    std::vector<Floats> results;
    for (size_t k = 0; k < output_counts.size(); ++k) {
      results.emplace_back(output_counts[k]);
      b.download(out[k], results.back().data(), output_counts[k] * sizeof(float));
    }
    return results;
  }
};

// Runs `call` on both backends and compares every output; returns the GPU's outputs.
inline std::vector<Floats> compare_backends(const std::string& what, const OpCall& call, Backend& gpu, Backend& host,
                                            const std::vector<Floats>& initial = {}) {
  auto on_gpu = call.run(gpu, initial);
  const auto on_host = call.run(host, initial);
  for (size_t k = 0; k < on_gpu.size(); ++k)
    expect_matches(what + " output " + std::to_string(k), on_gpu[k], on_host[k]);
  return on_gpu;
}

}  // namespace mirror::testing
