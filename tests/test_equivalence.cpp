// The key data-parallel property: N replicas on a split batch compute the same step as one replica
// on the whole batch, and every replica holds bitwise-identical parameters after every step.
#include <gtest/gtest.h>

#include "mirror/mirror.hpp"
#include "test_util.hpp"

namespace mirror {
namespace {

using testing::all_close;
using testing::synthetic_images;

std::unique_ptr<Sequential> small_cnn() {
  return std::make_unique<Sequential>(std::vector<LayerPtr>{
      layers::Conv2D(4, {3, 3}, Activation::ReLU, Shape{10, 10, 1}), layers::MaxPooling2D({2, 2}), layers::Flatten(),
      layers::Dense(5, Activation::Softmax)});
}

// Parameters after `steps` steps of global batch `batch` with `replicas` host replicas.
std::vector<float> train(int replicas, int64_t batch, int steps, OptimizerPtr optimizer, const ImageSet& data,
                         size_t bucket_bytes = size_t{25} << 20) {
  HostStrategy strategy(replicas, 1);
  auto model = small_cnn();
  model->compile(strategy, std::move(optimizer), {}, {metrics::Accuracy()}, /*seed=*/3);
  model->fit(data, {.epochs = 1, .batch_size = batch, .seed = 11, .verbose = 0, .steps_per_epoch = steps,
                    .verify_replicas = true, .gradient_bucket_bytes = bucket_bytes});
  EXPECT_TRUE(model->replicas_identical());
  return model->get_weights();
}

struct Case {
  int replicas;
  int64_t batch;
};

class Equivalence : public ::testing::TestWithParam<Case> {};

TEST_P(Equivalence, OneStepMatchesOneReplica) {
  const auto [replicas, batch] = GetParam();
  const ImageSet data = synthetic_images(200, 10, 10, 5);
  for (auto make : {+[] { return optimizers::SGD({.learning_rate = 0.5f}); }, +[] { return optimizers::Adam(); }}) {
    const auto reference = train(1, batch, 1, make(), data);
    const auto mirrored = train(replicas, batch, 1, make(), data);
    EXPECT_TRUE(all_close(mirrored, reference, 1e-5, 1e-7));
  }
}

TEST_P(Equivalence, SeveralStepsStayClose) {
  const auto [replicas, batch] = GetParam();
  const ImageSet data = synthetic_images(200, 10, 10, 5);
  const auto reference = train(1, batch, 5, optimizers::SGD({.learning_rate = 0.5f, .momentum = 0.9f}), data);
  const auto mirrored = train(replicas, batch, 5, optimizers::SGD({.learning_rate = 0.5f, .momentum = 0.9f}), data);
  EXPECT_TRUE(all_close(mirrored, reference, 1e-4, 1e-6));
}

INSTANTIATE_TEST_SUITE_P(ReplicasAndBatches, Equivalence,
                         ::testing::Values(Case{2, 32}, Case{3, 32}, Case{2, 33}, Case{3, 33}, Case{4, 3}, Case{3, 2}),
                         [](const auto& info) {
                           return std::to_string(info.param.replicas) + "replicas_batch" + std::to_string(info.param.batch);
                         });

TEST(Equivalence, TheLastPartialBatchIsTheMeanOverItsOwnRows) {
  // 70 samples in batches of 32: the third batch has 6 rows, split 2/2/2 over 3 replicas.
  const ImageSet data = synthetic_images(70, 10, 10, 5);
  const auto reference = train(1, 32, 3, optimizers::SGD({.learning_rate = 0.5f}), data);
  const auto mirrored = train(3, 32, 3, optimizers::SGD({.learning_rate = 0.5f}), data);
  EXPECT_TRUE(all_close(mirrored, reference, 1e-4, 1e-6));
}

TEST(Equivalence, GradientBucketsDoNotChangeTheResult) {
  // 97-float buckets cut through every layer's parameters and put the loss statistics in a
  // bucket of their own; every bucket is reduced in rank order, so the result is bitwise the same.
  const ImageSet data = synthetic_images(100, 10, 10, 5);
  const auto one_bucket = train(3, 33, 3, optimizers::Adam(), data);
  const auto many_buckets = train(3, 33, 3, optimizers::Adam(), data, 97 * sizeof(float));
  EXPECT_EQ(one_bucket, many_buckets);
  EXPECT_TRUE(all_close(many_buckets, train(1, 33, 3, optimizers::Adam(), data), 1e-4, 1e-6));
}

// Clipping by the global norm must see the all-reduced gradient: with buckets of 97 floats each
// replica's own gradient is a partial sum, and a norm taken from it would differ per replica (the
// replicas would diverge, which verify_replicas checks after every step) and from one replica's.
TEST(Equivalence, GlobalClipnormUsesTheAllReducedGradient) {
  const ImageSet data = synthetic_images(100, 10, 10, 5);
  const auto make = [] { return optimizers::Adam({.common = {.global_clipnorm = 0.05f}}); };
  const auto reference = train(1, 33, 3, make(), data, 97 * sizeof(float));
  for (int replicas : {2, 3}) {
    SCOPED_TRACE(replicas);
    EXPECT_TRUE(all_close(train(replicas, 33, 3, make(), data, 97 * sizeof(float)), reference, 1e-4, 1e-6));
  }
  // The clip is active: without it the parameters move differently.
  EXPECT_FALSE(all_close(train(1, 33, 3, optimizers::Adam(), data), reference, 1e-4, 1e-6));
  // Per-variable clipping and clipping by value are the same on every replica too.
  for (auto clipped : {+[] { return optimizers::SGD({.learning_rate = 0.5f, .common = {.clipnorm = 0.01f}}); },
                       +[] { return optimizers::SGD({.learning_rate = 0.5f, .common = {.clipvalue = 0.001f}}); }}) {
    EXPECT_TRUE(all_close(train(3, 33, 3, clipped(), data, 97 * sizeof(float)), train(1, 33, 3, clipped(), data), 1e-4,
                          1e-6));
  }
}

TEST(Equivalence, SameSeedSameWeightsWhateverTheReplicaCount) {
  HostStrategy one(1, 1), three(3, 1);
  auto a = small_cnn(), b = small_cnn();
  a->compile(one, optimizers::Adam(), {}, {}, 5);
  b->compile(three, optimizers::Adam(), {}, {}, 5);
  EXPECT_EQ(a->get_weights(), b->get_weights());
  EXPECT_EQ(b->get_weights(0), b->get_weights(2));
  auto c = small_cnn();
  c->compile(one, optimizers::Adam(), {}, {}, 6);
  EXPECT_NE(a->get_weights(), c->get_weights());
}

}  // namespace
}  // namespace mirror
