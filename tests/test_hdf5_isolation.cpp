// Reading .weights.h5 files in a child process: damaged files that crash libhdf5 1.10 or make it
// ask for gigabytes (found by fuzzing, kept in tests/data/hdf5/) are DataErrors that leave the
// model as it was, on disk and inside a .keras archive; the child's deadline and memory budget
// hold; and reading stays sound while other threads allocate, read and write weights files at the
// same time.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "mirror/model/saving/keras_format.hpp"
#include "saving_test_util.hpp"
#include "test_util.hpp"

namespace mirror {
namespace {

using testing::cnn;
using testing::message_of;
using testing::ramp;
using testing::SavingTest;

class Hdf5Isolation : public SavingTest {};

std::vector<uint8_t> bytes_of(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, std::span<const uint8_t> bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::filesystem::path> damaged_files() {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(MIRROR_SOURCE_DIR "/tests/data/hdf5"))
    if (entry.path().string().ends_with(".weights.h5")) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

TEST_F(Hdf5Isolation, FilesThatCrashLibhdf5AreDataErrorsAndChangeNothing) {
  const auto model = cnn();
  model->compile(strategy_, optimizers::Adam());
  model->set_weights(ramp(static_cast<size_t>(model->count_params())));
  const std::vector<float> before = model->get_weights();
  model->save(path("good.keras"));
  std::map<std::string, std::vector<uint8_t>> entries;
  {
    saving::ZipReader zip(path("good.keras"));
    for (const char* name : {"config.json", "metadata.json", "model.weights.h5"}) entries[name] = zip.read(name, 1 << 30);
  }

  const auto files = damaged_files();
  ASSERT_FALSE(files.empty());
  for (const auto& file : files) {
    SCOPED_TRACE(file.filename().string());
    const std::string message = message_of<DataError>([&] { model->load_weights(file.string()); });
    EXPECT_NE(message.find(file.string()), std::string::npos) << message;
    if (file.filename().string().starts_with("segv-")) {
      EXPECT_NE(message.find("libhdf5 crashed (SIGSEGV) reading it: the file is damaged"), std::string::npos) << message;
    }
    EXPECT_EQ(model->get_weights(), before);

    // The same bytes as the weights of a .keras archive, read from memory.
    entries["model.weights.h5"] = bytes_of(file);
    write_bytes(path("damaged.keras"), saving::write_zip({{"metadata.json", entries["metadata.json"]},
                                                          {"config.json", entries["config.json"]},
                                                          {"model.weights.h5", entries["model.weights.h5"]}}));
    EXPECT_NE(message_of<DataError>([&] { load_model(path("damaged.keras")); }).find("damaged.keras/model.weights.h5"),
              std::string::npos);
    EXPECT_THROW(model->load_weights(path("damaged.keras")), DataError);
    EXPECT_EQ(model->get_weights(), before);
  }
}

saving::WeightsImage image_of(size_t count) {
  saving::WeightsImage image;
  image.model_name = "m";
  image.keys = {"dense"};
  image.names["dense"] = "dense";
  image.vars["dense"] = {{{static_cast<int64_t>(count)}, ramp(count)}};
  return image;
}

TEST_F(Hdf5Isolation, TheChildIsKilledAtItsDeadlineAndHeldToItsMemoryBudget) {
  const std::vector<uint8_t> bytes = saving::write_weights_h5(image_of(size_t{4} << 20));  // 16 MiB of floats
  const saving::WeightsImage read = saving::read_weights_h5(bytes, "big.weights.h5");
  ASSERT_EQ(read.keys, std::vector<std::string>{"dense"});
  EXPECT_EQ(read.vars.at("dense").at(0).values, image_of(size_t{4} << 20).vars.at("dense")[0].values);

  const std::string late = message_of<DataError>([&] { saving::read_weights_h5(bytes, "big.weights.h5", {.wall_seconds = 1e-6}); });
  EXPECT_NE(late.find("big.weights.h5: libhdf5 did not finish reading it within"), std::string::npos) << late;
  // libhdf5 copies the 16 MiB image before anything else: 1 MiB beyond the parent's size is too little.
  const std::string small = message_of<DataError>([&] { saving::read_weights_h5(bytes, "big.weights.h5", {.memory_bytes = 1 << 20}); });
  EXPECT_NE(small.find("big.weights.h5"), std::string::npos) << small;
}

TEST_F(Hdf5Isolation, ReadsAreSoundWhileOtherThreadsAllocateAndUseHdf5) {
  const saving::WeightsImage image = image_of(1000);
  const std::vector<uint8_t> bytes = saving::write_weights_h5(image);
  std::atomic<bool> stop{false};
  // Forking while these hold malloc's or libhdf5's locks would leave the child stuck on them.
  std::thread churn([&] {
    while (!stop) {
      std::vector<std::unique_ptr<char[]>> blocks;
      for (int i = 0; i < 64; ++i) blocks.emplace_back(new char[static_cast<size_t>(1000 + 100 * i)]);
    }
  });
  std::thread writer([&] {
    while (!stop) saving::write_weights_h5(image);
  });
  std::atomic<int> good{0};
  std::mutex errors_mutex;
  std::vector<std::string> errors;
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r)
    readers.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        try {
          good += saving::read_weights_h5(bytes, "w.weights.h5").vars.at("dense") == image.vars.at("dense");
        } catch (const std::exception& e) {
          const std::lock_guard lock(errors_mutex);
          errors.push_back(e.what());
        }
      }
    });
  for (std::thread& t : readers) t.join();
  stop = true;
  churn.join();
  writer.join();
  EXPECT_EQ(good.load(), 30) << (errors.empty() ? std::string("no error") : errors.front());
}

}  // namespace
}  // namespace mirror
