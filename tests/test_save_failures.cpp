// A save that fails (a full disk, a place that refuses the file, as root too) raises a DataError
// that names the path and the reason, and leaves the previous file byte for byte, no temporary
// beside it and the model as it was; a load of a damaged or foreign file changes nothing either.
// Each case runs for the three writers: save_weights, save (.keras) and save_checkpoint.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <utility>

#include "mirror/mirror.hpp"
#include "mirror/model/saving/keras_format.hpp"
#include "saving_test_util.hpp"
#include "test_util.hpp"

namespace mirror {
namespace {

using testing::cnn;
using testing::message_of;
using testing::ramp;
using testing::SavingTest;
namespace fs = std::filesystem;

constexpr size_t kMaxTestFileBytes = size_t{1} << 30;

// Until the end of the scope no file this process writes may grow past `num_bytes`, as on a full
// disk: write() fails with EFBIG (SIGXFSZ, which would end the process, is ignored). Unlike
// permission bits, the limit binds root too.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t num_bytes) {
    EXPECT_EQ(::getrlimit(RLIMIT_FSIZE, &saved_), 0) << std::strerror(errno);
    handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = saved_;
    limit.rlim_cur = num_bytes;
    EXPECT_EQ(::setrlimit(RLIMIT_FSIZE, &limit), 0) << std::strerror(errno);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, handler_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

 private:
  rlimit saved_{};
  void (*handler_)(int) = SIG_DFL;
};

// Until the end of the scope the calling thread (the one that saves) obeys permission bits even
// as root: CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH leave its effective capabilities, and come
// back from the permitted ones afterwards. A process without them is unaffected.
class PermissionBitsBind {
 public:
  PermissionBitsBind() {
    if (::syscall(SYS_capget, &header_, saved_) != 0) return;
    __user_cap_data_struct reduced[2] = {saved_[0], saved_[1]};
    reduced[0].effective &= ~((1u << CAP_DAC_OVERRIDE) | (1u << CAP_DAC_READ_SEARCH));
    restore_ = ::syscall(SYS_capset, &header_, reduced) == 0;
  }
  ~PermissionBitsBind() {
    if (restore_) ::syscall(SYS_capset, &header_, saved_);
  }
  PermissionBitsBind(const PermissionBitsBind&) = delete;
  PermissionBitsBind& operator=(const PermissionBitsBind&) = delete;

 private:
  __user_cap_header_struct header_{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct saved_[2]{};
  bool restore_ = false;
};

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// One of the three writers, the reader of what it writes, and the name of its file.
struct Writer {
  std::string name;  // the test's suffix
  std::string file;
  std::function<void(Model&, const std::string&)> save;
  std::function<void(Model&, const std::string&)> load;
};

void PrintTo(const Writer& writer, std::ostream* out) { *out << writer.name; }

const Writer kWriters[] = {
    {"save_weights", "m.weights.h5", [](Model& m, const std::string& p) { m.save_weights(p); },
     [](Model& m, const std::string& p) { m.load_weights(p); }},
    {"save", "m.keras", [](Model& m, const std::string& p) { m.save(p); },
     [](Model& m, const std::string& p) { m.load_weights(p); }},
    {"save_checkpoint", "m.ckpt", [](Model& m, const std::string& p) { m.save_checkpoint(p); },
     [](Model& m, const std::string& p) { m.load_checkpoint(p); }},
};

// A compiled model saved once with the writer, whose weights then change: a save that went
// through would change the file.
class SaveFailureTest : public SavingTest, public ::testing::WithParamInterface<Writer> {
 protected:
  void SetUp() override {
    SavingTest::SetUp();
    model_ = cnn();
    model_->compile(strategy_, optimizers::Adam());
    save(file());
    previous_ = saving::read_file(file(), kMaxTestFileBytes);
    model_->set_weights(ramp(static_cast<size_t>(model_->count_params())));
    weights_ = model_->get_weights();
  }

  std::string file() const { return path(GetParam().file); }
  void save(const std::string& to) { GetParam().save(*model_, to); }

  // The previous file byte for byte, nothing in the directory but it and `others`, the model's
  // weights as they were.
  void expect_nothing_changed(std::set<std::string> others = {}) {
    EXPECT_EQ(saving::read_file(file(), kMaxTestFileBytes), previous_);
    std::set<std::string> entries;
    for (const auto& entry : fs::directory_iterator(dir_)) entries.insert(entry.path().filename().string());
    others.insert(GetParam().file);
    EXPECT_EQ(entries, others) << "a temporary file was left behind";
    EXPECT_EQ(model_->get_weights(), weights_);
  }

  std::unique_ptr<Model> model_;
  std::vector<uint8_t> previous_;
  std::vector<float> weights_;
};

void expect_names(const std::string& message, const std::string& path, int err) {
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find(std::strerror(err)), std::string::npos) << message;
}

TEST_P(SaveFailureTest, AFullDiskLeavesThePreviousFile) {
  std::string message;
  {
    const FileSizeLimit limit(previous_.size() / 2);  // the new file is as large as the previous one
    message = message_of<DataError>([&] { save(file()); });
  }
  expect_names(message, file(), EFBIG);
  expect_nothing_changed();
  save(file());  // with room again the same save goes through
  EXPECT_NE(saving::read_file(file(), kMaxTestFileBytes), previous_);
}

TEST_P(SaveFailureTest, ADirectoryInTheWayIsRefusedEvenForRoot) {
  // rename() puts no file over a directory, whoever asks.
  const std::string taken = "taken_" + GetParam().file;
  fs::create_directory(path(taken));
  write_bytes(path(taken) + "/kept", {'k'});
  expect_names(message_of<DataError>([&] { save(path(taken)); }), path(taken), EISDIR);
  expect_nothing_changed({taken});
  EXPECT_EQ(saving::read_file(path(taken) + "/kept", 16), std::vector<uint8_t>{'k'});
}

TEST_P(SaveFailureTest, AParentThatIsAFileIsRefusedEvenForRoot) {
  write_bytes(path("plain"), {'p'});
  const std::string target = path("plain/" + GetParam().file);
  expect_names(message_of<DataError>([&] { save(target); }), target, ENOTDIR);
  expect_nothing_changed({"plain"});
  EXPECT_EQ(saving::read_file(path("plain"), 16), std::vector<uint8_t>{'p'});
}

TEST_P(SaveFailureTest, AReadOnlyDirectoryIsRefused) {
  fs::permissions(dir_, fs::perms::owner_read | fs::perms::owner_exec);
  std::string message;
  int probe = -1;
  {
    const PermissionBitsBind as_a_user;  // root too: CI runs as root
    probe = ::open(path("probe").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (probe >= 0) {
      ::close(probe);
      ::unlink(path("probe").c_str());
    } else {
      message = message_of<DataError>([&] { save(file()); });
    }
  }
  fs::permissions(dir_, fs::perms::owner_all);
  ASSERT_LT(probe, 0) << "the directory stayed writable: this process can neither obey nor drop CAP_DAC_OVERRIDE";
  expect_names(message, file(), EACCES);
  expect_nothing_changed();
}

// A damaged file is an error that names it, or (where the format has no checksum over the bytes
// that changed) a load that goes through; a failed load leaves the weights and the step count.
TEST_P(SaveFailureTest, ADamagedFileChangesNothingWhenItFails) {
  std::vector<std::vector<uint8_t>> damaged;
  for (size_t cut : {size_t{0}, size_t{8}, previous_.size() / 3, previous_.size() - 1})
    damaged.emplace_back(previous_.begin(), previous_.begin() + static_cast<ptrdiff_t>(cut));
  for (size_t at = 0; at < previous_.size(); at += 1 + previous_.size() / 97) {
    damaged.push_back(previous_);
    damaged.back()[at] ^= 0x10;
  }
  const std::string broken = path("broken_" + GetParam().file);
  size_t errors = 0;
  for (size_t i = 0; i < damaged.size(); ++i) {
    write_bytes(broken, damaged[i]);
    model_->set_weights(weights_);
    const int64_t steps = model_->iterations();
    try {
      GetParam().load(*model_, broken);
    } catch (const DataError& e) {
      ++errors;
      EXPECT_NE(std::string(e.what()).find(broken), std::string::npos) << e.what();
      EXPECT_EQ(model_->get_weights(), weights_) << "damaged file " << i;
      EXPECT_EQ(model_->iterations(), steps) << "damaged file " << i;
    }
  }
  // Every cut is an error in every format; a checkpoint's CRC-32 catches every flipped byte.
  EXPECT_GE(errors, GetParam().file == "m.ckpt" ? damaged.size() : 4);
}

INSTANTIATE_TEST_SUITE_P(Writers, SaveFailureTest, ::testing::ValuesIn(kWriters),
                         [](const ::testing::TestParamInfo<Writer>& info) { return info.param.name; });

// `checkpoint` with its JSON header edited, and the header's size and the CRC-32 made right again
// (checkpoint.cpp's layout: the header's size at byte 16, the header from byte 24).
std::vector<uint8_t> with_header(const std::vector<uint8_t>& checkpoint, const std::function<void(nlohmann::json&)>& edit) {
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, checkpoint.data() + 16, sizeof header_bytes);
  const auto header_end = checkpoint.begin() + 24 + static_cast<ptrdiff_t>(header_bytes);
  nlohmann::json header = nlohmann::json::parse(checkpoint.begin() + 24, header_end);
  edit(header);
  const std::string text = header.dump();
  std::vector<uint8_t> out(checkpoint.begin(), checkpoint.begin() + 16);
  header_bytes = text.size();
  out.insert(out.end(), reinterpret_cast<const uint8_t*>(&header_bytes), reinterpret_cast<const uint8_t*>(&header_bytes + 1));
  out.insert(out.end(), text.begin(), text.end());
  out.insert(out.end(), header_end, checkpoint.end() - 4);
  const auto crc = static_cast<uint32_t>(crc32_z(crc32_z(0, nullptr, 0), out.data(), out.size()));
  out.insert(out.end(), reinterpret_cast<const uint8_t*>(&crc), reinterpret_cast<const uint8_t*>(&crc + 1));
  return out;
}

// A header field missing or of the wrong kind (found by fuzz_checkpoint) is refused before
// anything changes.
TEST_F(SavingTest, ACheckpointHeaderFieldMissingOrOfTheWrongKindChangesNothing) {
  auto model = cnn();
  model->compile(strategy_, optimizers::Adam());
  model->save_checkpoint(path("m.ckpt"));
  const std::vector<uint8_t> saved = saving::read_file(path("m.ckpt"), kMaxTestFileBytes);
  model->set_weights(ramp(static_cast<size_t>(model->count_params())));
  const std::vector<float> weights = model->get_weights();
  const std::pair<const char*, std::function<void(nlohmann::json&)>> edits[] = {
      {"format = 1", [](nlohmann::json& h) { h["format"] = 1; }},
      {"no model", [](nlohmann::json& h) { h.erase("model"); }},
      {"no iterations", [](nlohmann::json& h) { h["model"].erase("iterations"); }},
      {"iterations = \"x\"", [](nlohmann::json& h) { h["model"]["iterations"] = "x"; }},
      {"iterations = -5", [](nlohmann::json& h) { h["model"]["iterations"] = -5; }},
      {"iterations = 1e300", [](nlohmann::json& h) { h["model"]["iterations"] = 1e300; }},
      {"arrays not a list", [](nlohmann::json& h) { h["arrays"] = 3; }},
      {"an array of an unknown type", [](nlohmann::json& h) { h["arrays"][0]["type"] = "f16"; }},
      {"an array past the end", [](nlohmann::json& h) { h["arrays"][0]["count"] = uint64_t{1} << 40; }},
      {"an array's count not a count", [](nlohmann::json& h) { h["arrays"][0]["count"] = "many"; }},
  };
  for (const auto& [what, edit] : edits) {
    SCOPED_TRACE(what);
    write_bytes(path("bad.ckpt"), with_header(saved, edit));
    const std::string message = message_of<DataError>([&] { model->load_checkpoint(path("bad.ckpt")); });
    EXPECT_NE(message.find(path("bad.ckpt")), std::string::npos) << message;
    EXPECT_EQ(model->get_weights(), weights);
    EXPECT_EQ(model->iterations(), 0);
  }
}

// A learning rate that is a finite double but no finite float (found by fuzz_checkpoint: the model
// was changed before set_learning_rate refused it).
TEST_F(SavingTest, ACheckpointLearningRateBeyondFloatChangesNothing) {
  auto model = cnn();
  model->compile(strategy_, optimizers::SGD());
  model->save_checkpoint(path("m.ckpt"));
  std::vector<uint8_t> bytes = saving::read_file(path("m.ckpt"), kMaxTestFileBytes);
  const double huge = 2e233;  // the file's only float64 array: the last 8 bytes before the CRC
  std::memcpy(bytes.data() + bytes.size() - 4 - sizeof huge, &huge, sizeof huge);
  write_bytes(path("bad.ckpt"), with_header(bytes, [](nlohmann::json&) {}));
  model->set_weights(ramp(static_cast<size_t>(model->count_params())));
  const std::vector<float> weights = model->get_weights();
  const std::string message = message_of<DataError>([&] { model->load_checkpoint(path("bad.ckpt")); });
  EXPECT_NE(message.find("learning rate"), std::string::npos) << message;
  EXPECT_EQ(model->get_weights(), weights);
  EXPECT_FLOAT_EQ(model->optimizer().learning_rate(0), 0.01f);
}

TEST_F(SavingTest, AKerasFileOfAnotherVersionIsNamed) {
  auto model = cnn();
  model->compile(strategy_, optimizers::Adam());
  const std::string text = R"({"keras_version": "2.15.0"})";
  write_bytes(path("old.keras"), saving::write_zip({{"metadata.json", {text.begin(), text.end()}},
                                                    {"config.json", {'{', '}'}},
                                                    {"model.weights.h5", saving::write_weights_h5(saving::weights_of(*model))}}));
  const std::string message = message_of<DataError>([&] { load_model(path("old.keras")); });
  EXPECT_NE(message.find(path("old.keras")), std::string::npos) << message;
  EXPECT_NE(message.find("2.15.0"), std::string::npos) << message;
  EXPECT_NE(message.find("Keras 3"), std::string::npos) << message;
}

}  // namespace
}  // namespace mirror
