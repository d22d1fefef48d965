// fit's backups (FitOptions::backup_dir, Keras's BackupAndRestore) in process: a fit that dies
// part-way (here: a callback throws, which ends fit as a crash would) and is run again on a new
// model continues from the newest backup and ends bitwise where an uninterrupted fit ends —
// weights, History and the CSV log — with dropout, validation and stateful callbacks; a backup of
// another run is refused; a damaged newest backup falls back to the one before; and a training
// step that failed on one replica after the others had updated makes the next call refuse.
// tests/test_crash_resume.sh does the same across processes with SIGKILL.
#include <gtest/gtest.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>

#include "mirror/mirror.hpp"
#include "test_util.hpp"

namespace mirror {
namespace {

namespace fs = std::filesystem;
using data::synthetic_images;

std::unique_ptr<Model> dropout_model() {
  Tensor x = Input(Shape{6, 6, 1});
  Tensor y = layers::Conv2D(4, {3, 3}, Activation::ReLU)(x);
  y = layers::Dropout(0.3f)(layers::Flatten()(y));
  return std::make_unique<Model>(x, layers::Dense(3, Activation::Softmax)(y));
}

std::string text_of(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), {}};
}

class BackupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mirror_backup_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // The callbacks of every run: stateful ones, and one that throws at the end of epoch
  // `crash_epoch` (0-based) after the CSV row of that epoch was written, when `crash_epoch` >= 0.
  std::vector<CallbackPtr> callbacks_for(int crash_epoch, const std::string& csv) {
    return {callbacks::EarlyStopping({.monitor = "val_loss", .patience = 10, .restore_best_weights = true}),
            callbacks::ReduceLROnPlateau({.monitor = "loss", .factor = 0.5, .patience = 0, .min_delta = 10.0}),
            callbacks::CSVLogger(csv),
            callbacks::LambdaCallback({.on_epoch_end = [crash_epoch](int epoch, EpochLog&) {
              if (epoch == crash_epoch) throw std::runtime_error("simulated crash");
            }})};
  }
  FitOptions options(const std::vector<CallbackPtr>& callbacks, bool backups) {
    FitOptions o{.epochs = 4, .batch_size = 16, .seed = 5, .verbose = 0, .validation_split = 0.25,
                 .callbacks = callbacks};
    if (backups) {
      o.backup_dir = (dir_ / "backups").string();
      o.backup_every_steps = 2;
    }
    return o;
  }

  fs::path dir_;
  const ImageSet data_ = synthetic_images(96, 6, 6, 3, 21);  // 72 to train on: 5 steps per epoch
};

TEST_F(BackupTest, AFitThatDiedContinuesBitwiseWithItsCallbacksAndHistory) {
  HostStrategy two(2, 1);
  auto reference = dropout_model();
  reference->compile(two, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()}, 1);
  const History want = reference->fit(data_, options(callbacks_for(-1, (dir_ / "want.csv").string()), false));
  const std::string csv = (dir_ / "got.csv").string();

  // Dies at the end of epoch 2 (0-based 1), after its CSV row: the newest backup is from step 4 of
  // that epoch, so the row is cut off and written again, once.
  auto first = dropout_model();
  first->compile(two, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()}, 1);
  EXPECT_THROW(first->fit(data_, options(callbacks_for(1, csv), true)), std::runtime_error);
  EXPECT_FALSE(fs::is_empty(dir_ / "backups"));

  auto second = dropout_model();  // another process: other initial weights, fresh callbacks
  second->compile(two, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()}, 99);
  const History got = second->fit(data_, options(callbacks_for(-1, csv), true));
  EXPECT_EQ(second->get_weights(), reference->get_weights());
  EXPECT_EQ(second->iterations(), reference->iterations());
  EXPECT_EQ(second->optimizer().learning_rate(0), reference->optimizer().learning_rate(0));
  ASSERT_EQ(got.epochs.size(), want.epochs.size());
  for (size_t e = 0; e < want.epochs.size(); ++e) {
    EXPECT_EQ(got.epochs[e].epoch, want.epochs[e].epoch);
    EXPECT_EQ(got.epochs[e].values, want.epochs[e].values) << "epoch " << e + 1;
    EXPECT_EQ(got.epochs[e].val_loss, want.epochs[e].val_loss);
  }
  EXPECT_EQ(text_of(csv), text_of(dir_ / "want.csv"));
  EXPECT_TRUE(fs::is_empty(dir_ / "backups"));  // a finished fit deletes its backups (Keras's default)
}

TEST_F(BackupTest, ABackupRestoresOntoAnotherReplicaCount) {
  HostStrategy two(2, 1), three(3, 1);
  auto reference = dropout_model();
  reference->compile(two, optimizers::Adam(), {}, {}, 1);
  reference->fit(data_, options(callbacks_for(-1, (dir_ / "a.csv").string()), false));
  auto first = dropout_model();
  first->compile(two, optimizers::Adam(), {}, {}, 1);
  EXPECT_THROW(first->fit(data_, options(callbacks_for(2, (dir_ / "b.csv").string()), true)), std::runtime_error);
  auto second = dropout_model();
  second->compile(three, optimizers::Adam(), {}, {}, 2);
  second->fit(data_, options(callbacks_for(-1, (dir_ / "b.csv").string()), true));
  // The same model up to the order of the gradient sums and of the batch-share statistics.
  const std::vector<float> want = reference->get_weights(), got = second->get_weights();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4f + 1e-3f * std::abs(want[i])) << "at " << i;
}

TEST_F(BackupTest, ABackupOfAnotherRunIsRefusedAndChangesNothing) {
  HostStrategy one(1, 1);
  auto first = dropout_model();
  first->compile(one, optimizers::Adam(), {}, {}, 1);
  FitOptions o = options({}, true);
  o.backup_keep_at_end = true;
  first->fit(data_, o);
  ASSERT_FALSE(fs::is_empty(dir_ / "backups"));

  auto second = dropout_model();
  second->compile(one, optimizers::Adam(), {}, {}, 2);
  const std::vector<float> before = second->get_weights();
  FitOptions other = o;
  other.batch_size = 8;
  try {
    second->fit(data_, other);
    FAIL() << "a backup taken with batch_size 16 continued a fit with batch_size 8";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("batch_size = 16"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("batch_size = 8"), std::string::npos) << e.what();
  }
  other = o;
  other.seed = 6;
  EXPECT_THROW(second->fit(data_, other), InvalidArgument);
  other = o;
  other.callbacks = {callbacks::TerminateOnNaN()};
  EXPECT_THROW(second->fit(data_, other), InvalidArgument);
  EXPECT_EQ(second->get_weights(), before);
  EXPECT_EQ(second->iterations(), 0);
  // Another architecture: the model's check names the variable.
  auto wider = std::make_unique<Sequential>(std::vector<LayerPtr>{
      layers::Conv2D(5, {3, 3}, Activation::ReLU, Shape{6, 6, 1}), layers::Flatten(), layers::Dense(3, Activation::Softmax)});
  wider->compile(one, optimizers::Adam());
  EXPECT_THROW(wider->fit(data_, o), DataError);
}

TEST_F(BackupTest, ADamagedNewestBackupFallsBackToTheOneBefore) {
  HostStrategy one(1, 1);
  auto reference = dropout_model();
  reference->compile(one, optimizers::Adam(), {}, {}, 1);
  reference->fit(data_, options({}, false));

  auto first = dropout_model();
  first->compile(one, optimizers::Adam(), {}, {}, 1);
  FitOptions o = options({callbacks::LambdaCallback({.on_epoch_end = [](int epoch, EpochLog&) {
                            if (epoch == 1) throw std::runtime_error("simulated crash");
                          }})},
                         true);
  o.backup_keep = 3;
  EXPECT_THROW(first->fit(data_, o), std::runtime_error);
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir_ / "backups")) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  ASSERT_EQ(files.size(), 3u);  // backup_keep
  {
    std::fstream f(files.back(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
  }
  auto second = dropout_model();
  second->compile(one, optimizers::Adam(), {}, {}, 2);
  std::ostringstream out;
  o.callbacks = {callbacks::LambdaCallback({})};
  o.out = &out;
  second->fit(data_, o);
  EXPECT_NE(out.str().find("skipping a backup that cannot be read"), std::string::npos) << out.str();
  EXPECT_EQ(second->get_weights(), reference->get_weights());
}

// An identity layer with a counter that its update_state raises on every replica but replica 1,
// which fails at iteration `fail_at`: one replica's variables moved on, the other's did not.
class FailingCounter final : public Layer {
 public:
  explicit FailingCounter(int64_t fail_at) : fail_at_(fail_at) {}
  std::string type() const override { return "FailingCounter"; }
  std::string default_name() const override { return "failing_counter"; }
  std::vector<VariableSpec> variables() const override {
    return {{.name = "count", .shape = Shape{1}, .init = Initializer::Zeros, .trainable = false}};
  }
  void forward(const ForwardArgs& a) override {
    a.ctx.backend.copy(a.inputs[0], a.output, static_cast<size_t>(a.ctx.rows * size_));
  }
  void backward(const BackwardArgs& a) override {
    if (a.dx[0]) a.ctx.backend.copy(a.dy, a.dx[0], static_cast<size_t>(a.ctx.rows * size_));
  }
  void update_state(const ForwardArgs& a) override {
    if (a.ctx.replica.replica() == 1 && a.ctx.iteration == fail_at_) throw std::runtime_error("replica 1 failed");
    a.vars[0][0] += 1.0f;  // host memory: the host strategy's
  }
  Shape compute_output_shape(std::span<const Shape> inputs) override {
    size_ = inputs[0].count();
    return inputs[0];
  }

 private:
  int64_t fail_at_;
  int64_t size_ = 0;
};

TEST_F(BackupTest, AStepThatFailedOnOneReplicaMakesTheNextCallRefuse) {
  HostStrategy two(2, 1);
  Tensor x = Input(Shape{6, 6, 1});
  const LayerPtr counter = std::make_shared<FailingCounter>(3);
  Tensor y = layers::Flatten()(counter(x));
  Model model(x, layers::Dense(3, Activation::Softmax)(y));
  model.compile(two, optimizers::Adam(), {}, {}, 1);
  model.save_checkpoint((dir_ / "start.ckpt").string());
  EXPECT_THROW(model.fit(data_, {.epochs = 1, .batch_size = 16, .verbose = 0}), std::runtime_error);
  EXPECT_FALSE(model.replicas_identical());
  for (const auto& call : std::vector<std::function<void()>>{
           [&] { model.fit(data_, {.epochs = 1, .batch_size = 16, .verbose = 0}); },
           [&] { model.evaluate(data_, {.verbose = 0}); }, [&] { model.predict(data_); }}) {
    try {
      call();
      FAIL() << "a call ran on replicas that differ";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("no longer hold the same variables"), std::string::npos) << e.what();
    }
  }
  model.load_checkpoint((dir_ / "start.ckpt").string());
  EXPECT_TRUE(model.replicas_identical());
  EXPECT_NO_THROW(model.evaluate(data_, {.verbose = 0}));
}

// Catchers nest: fit's and evaluate's inside a program's own see a signal that came before them,
// and only the outermost gives the previous handler back.
TEST(Signals, CatchersNestAndTheOutermostGivesTheHandlerBack) {
  struct sigaction before {}, after {};
  ::sigaction(SIGINT, nullptr, &before);
  {
    const SignalCatcher outer;
    EXPECT_EQ(outer.caught(), 0);
    std::raise(SIGINT);
    EXPECT_EQ(outer.caught(), SIGINT);
    {
      const SignalCatcher inner;
      EXPECT_EQ(inner.caught(), SIGINT);
    }
    EXPECT_EQ(outer.caught(), SIGINT);
  }
  ::sigaction(SIGINT, nullptr, &after);
  EXPECT_EQ(after.sa_handler, before.sa_handler);
  const SignalCatcher inactive(false);
  EXPECT_EQ(inactive.caught(), 0);
}

// evaluate(stop_on_signals) ends after the batch in which a signal arrived, naming both.
TEST(Signals, EvaluateStopsAfterTheBatchOfASignal) {
  HostStrategy strategy(2, 1);
  auto model = dropout_model();
  model->compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()}, 3);
  const ImageSet data = synthetic_images(256, 6, 6, 3);
  const SignalCatcher program;
  std::raise(SIGTERM);
  const std::string message =
      testing::message_of<Interrupted>([&] { model->evaluate(data, {.batch_size = 32, .verbose = 0, .stop_on_signals = true}); });
  EXPECT_NE(message.find("evaluate stopped by SIGTERM after batch 1/8"), std::string::npos) << message;
  EXPECT_TRUE(std::isfinite(model->evaluate(data, {.batch_size = 32, .verbose = 0}).loss));  // without: the whole set
}

}  // namespace
}  // namespace mirror
