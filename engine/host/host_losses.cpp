// The host's loss and metric ops: ew::loss_row / ew::metric_row (shared with the CUDA kernels)
// over the rows of a replica's outputs. A batch is small (rows x classes of a few thousand), so
// one thread and a fixed summation order: the sums are the same run to run.
#include "mirror/engine/elementwise.hpp"
#include "mirror/engine/host/host_backend_impl.hpp"

namespace mirror::host {
namespace {

const char* loss_name(LossKind kind) {
  switch (kind) {
    case LossKind::SparseCategoricalCrossentropy: return "sparse categorical cross-entropy";
    case LossKind::CategoricalCrossentropy: return "categorical cross-entropy";
    case LossKind::BinaryCrossentropy: return "binary cross-entropy";
    case LossKind::MeanSquaredError: return "mean squared error";
  }
  return "?";
}

void check_spec(const LossSpec& s, int64_t cols) {
  MIRROR_REQUIRE(cols > 0, InvalidArgument, loss_name(s.kind), " needs at least one output column, got ", cols);
  MIRROR_REQUIRE(s.label_smoothing >= 0.0f && s.label_smoothing <= 1.0f, InvalidArgument, "label_smoothing ",
                 s.label_smoothing, " is outside [0, 1]");
  // Keras offers no smoothing for these, and ignoring it silently would train something else.
  MIRROR_REQUIRE(s.label_smoothing == 0.0f || s.kind == LossKind::CategoricalCrossentropy ||
                     s.kind == LossKind::BinaryCrossentropy,
                 InvalidArgument, "label_smoothing ", s.label_smoothing, " with ", loss_name(s.kind),
                 ": only categorical and binary cross-entropy smooth their labels");
  MIRROR_REQUIRE(!s.gradient_through_activation || (!s.from_logits && s.kind != LossKind::MeanSquaredError),
                 InvalidArgument, "gradient_through_activation with ", loss_name(s.kind),
                 s.from_logits ? " from logits" : "",
                 ": it needs probabilities from the softmax or sigmoid just before a cross-entropy");
}

// Names what a label must be, for the error a user sees.
std::string expected_labels(const LossSpec& s, int64_t cols) {
  if (cols == 1 && s.kind == LossKind::BinaryCrossentropy)
    return "0 or 1: binary cross-entropy on one output column takes 0/1 labels";
  return str("in [0, ", cols, "): the model's last layer has ", cols, " units");
}

}  // namespace

void HostBackend::loss(const LossSpec& spec, int64_t rows, int64_t cols, const float* outputs, const int32_t* labels,
                       float scale, float* dinput, float* stats) {
  if (rows == 0) return;
  check_spec(spec, cols);
  float total = 0.0f;
  for (int64_t r = 0; r < rows; ++r) {
    MIRROR_REQUIRE(ew::label_ok(spec, labels[r], cols), DataError, "label ", labels[r], " at batch row ", r,
                   " does not fit ", loss_name(spec.kind), ": expected ", expected_labels(spec, cols));
    total += ew::loss_row(spec, outputs + r * cols, labels[r], cols, scale, dinput ? dinput + r * cols : nullptr);
  }
  stats[0] += total;
}

void HostBackend::metric(const MetricSpec& spec, int64_t rows, int64_t cols, const float* outputs,
                         const int32_t* labels, float* stats) {
  if (rows == 0) return;
  MIRROR_REQUIRE(cols > 0, InvalidArgument, "a metric needs at least one output column, got ", cols);
  float total = 0.0f;
  for (int64_t r = 0; r < rows; ++r) total += ew::metric_row(spec, outputs + r * cols, labels[r], cols);
  stats[0] += total;
}

}  // namespace mirror::host
