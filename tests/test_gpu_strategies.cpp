// GPU strategies end to end (CUDA builds): one-device and mirrored training, evaluation and
// prediction against the host backend, including the uneven cases (a replica with no rows, the
// last partial batch). Every test skips, saying why, when no GPU is present.
#include <gtest/gtest.h>

#include "mirror/mirror.hpp"
#include "test_util.hpp"

namespace mirror {
namespace {

using testing::all_close;
using testing::synthetic_images;

class GpuStrategies : public ::testing::Test {
 protected:
  void SetUp() override {
    gpus_ = list_physical_devices(DeviceKind::GPU);
    if (gpus_.empty()) GTEST_SKIP() << "no GPU: " << gpu_unavailable_reason();
  }
  std::vector<Device> gpus_;
};

std::unique_ptr<Sequential> small_cnn() {
  return std::make_unique<Sequential>(std::vector<LayerPtr>{
      layers::Conv2D(8, {3, 3}, Activation::ReLU, Shape{12, 12, 1}), layers::MaxPooling2D({2, 2}), layers::Flatten(),
      layers::Dense(5, Activation::Softmax)});
}

std::vector<float> train(Strategy& strategy, int steps, int64_t batch, const ImageSet& data,
                         size_t bucket_bytes = size_t{25} << 20) {
  auto model = small_cnn();
  model->compile(strategy, optimizers::SGD({.learning_rate = 0.5f}), {}, {}, 3);
  model->fit(data, {.epochs = 1, .batch_size = batch, .seed = 5, .verbose = 0, .steps_per_epoch = steps,
                    .verify_replicas = true, .gradient_bucket_bytes = bucket_bytes});
  return model->get_weights();
}

TEST_F(GpuStrategies, OneDeviceMatchesTheHost) {
  const ImageSet data = synthetic_images(300, 12, 12, 5);
  HostStrategy host(1);
  OneDeviceStrategy gpu(gpus_[0]);
  EXPECT_TRUE(all_close(train(gpu, 3, 32, data), train(host, 3, 32, data), 1e-4, 1e-6));
}

TEST_F(GpuStrategies, LogicalReplicasMatchOneReplica) {
  const ImageSet data = synthetic_images(300, 12, 12, 5);
  OneDeviceStrategy one(gpus_[0]);
  for (int replicas : {2, 3}) {
    MirroredStrategy mirrored({gpus_[0]}, replicas);
    ASSERT_EQ(mirrored.num_replicas(), replicas);
    for (int64_t batch : {32, 33})
      EXPECT_TRUE(all_close(train(mirrored, 3, batch, data), train(one, 3, batch, data), 1e-4, 1e-6))
          << replicas << " replicas, batch " << batch;
  }
}

TEST_F(GpuStrategies, AReplicaWithNoRowsStillTakesPart) {
  // A global batch of 2 over 3 replicas: the third gets no rows, yet joins every collective and
  // applies the same update.
  const ImageSet data = synthetic_images(300, 12, 12, 5);
  OneDeviceStrategy one(gpus_[0]);
  MirroredStrategy three({gpus_[0]}, 3);
  EXPECT_TRUE(all_close(train(three, 3, 2, data), train(one, 3, 2, data), 1e-4, 1e-6));
}

TEST_F(GpuStrategies, ThePartialLastBatchMatchesTheHost) {
  // 70 samples in batches of 32, a whole epoch: the last batch has 6 rows, 2 per replica over 3.
  const ImageSet data = synthetic_images(70, 12, 12, 5);
  HostStrategy host(1);
  OneDeviceStrategy one(gpus_[0]);
  MirroredStrategy three({gpus_[0]}, 3);
  const auto reference = train(host, 0, 32, data);
  EXPECT_TRUE(all_close(train(one, 0, 32, data), reference, 1e-4, 1e-6));
  EXPECT_TRUE(all_close(train(three, 0, 32, data), reference, 1e-4, 1e-6));
}

TEST_F(GpuStrategies, EvaluateAndPredictMatchTheHost) {
  // The same seed gives the same weights everywhere; 70 samples end in a partial batch.
  const ImageSet data = synthetic_images(70, 12, 12, 5);
  const auto run = [&](Strategy& strategy) {
    auto model = small_cnn();
    model->compile(strategy, optimizers::SGD({.learning_rate = 0.5f}), {}, {metrics::Accuracy()}, 3);
    const EvaluateResult result = model->evaluate(data, {.batch_size = 32, .verbose = 0});
    return std::make_pair(result, model->predict(data, 32));
  };
  HostStrategy host(1);
  OneDeviceStrategy one(gpus_[0]);
  MirroredStrategy two({gpus_[0]}, 2);
  const auto [want, want_outputs] = run(host);
  for (Strategy* strategy : {static_cast<Strategy*>(&one), static_cast<Strategy*>(&two)}) {
    SCOPED_TRACE(strategy->describe());
    const auto [got, outputs] = run(*strategy);
    EXPECT_NEAR(got.loss, want.loss, 1e-4 * std::fabs(want.loss) + 1e-6);
    // Near-ties of the largest probability may fall either way: allow one sample of 70.
    EXPECT_NEAR(got.accuracy, want.accuracy, 1.0 / 70 + 1e-9);
    EXPECT_TRUE(all_close(outputs, want_outputs, 1e-4, 1e-6));
  }
}

TEST_F(GpuStrategies, MirroredOverEveryGpuMatchesOneDevice) {
  const ImageSet data = synthetic_images(300, 12, 12, 5);
  OneDeviceStrategy one(gpus_[0]);
  MirroredStrategy all(gpus_);
  EXPECT_TRUE(all_close(train(all, 3, 32, data), train(one, 3, 32, data), 1e-4, 1e-6));
}

TEST_F(GpuStrategies, GradientBucketsOverlappingBackwardGiveTheSameResult) {
  // Small buckets: several NCCL all-reduces per step on the communication stream while backward
  // still runs on the compute stream.
  const ImageSet data = synthetic_images(300, 12, 12, 5);
  MirroredStrategy all(gpus_);
  const auto one_bucket = train(all, 3, 32, data);
  const auto many_buckets = train(all, 3, 32, data, 64 * sizeof(float));
  EXPECT_TRUE(all_close(many_buckets, one_bucket, 1e-5, 1e-7));
}

TEST_F(GpuStrategies, ShortTrainingReachesTheHostBand) {
  const Dataset full = data::load_idx_dataset();
  const ImageSet train_set = full.train.head(6000), test_set = full.test.head(2000);
  MirroredStrategy strategy({gpus_[0]}, 2);
  Sequential model({layers::Conv2D(32, {3, 3}, Activation::ReLU, train_set.sample_shape()), layers::MaxPooling2D({2, 2}),
                    layers::Flatten(), layers::Dense(10, Activation::Softmax)});
  model.compile(strategy, optimizers::Adam(), {}, {metrics::Accuracy()}, 42);
  model.fit(train_set, {.epochs = 1, .batch_size = 32, .seed = 42, .verbose = 2});
  EXPECT_GT(model.evaluate(test_set, {.verbose = 0}).accuracy, 0.70);
}

}  // namespace
}  // namespace mirror
