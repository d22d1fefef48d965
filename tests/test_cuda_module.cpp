// The CUDA module (engine/cuda_module.hpp): a run on the CPU loads no CUDA library, asking for the
// GPU report does load the module (so the first check could fail), and a module that cannot be
// loaded is explained by the library it misses, the versions found instead, and the fix.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "mirror/engine/cuda_module.hpp"
#include "mirror/mirror.hpp"
#include "test_util.hpp"

namespace mirror {
namespace {

namespace fs = std::filesystem;

// The lines of /proc/self/maps that map one of the CUDA libraries or the module.
std::vector<std::string> cuda_mappings() {
  std::vector<std::string> lines;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);)
    for (const char* lib : {"libcudart", "libcublas", "libcudnn", "libnccl", "libcuda.so", "libmirror_cuda"})
      if (line.find(lib) != std::string::npos) {
        lines.push_back(line);
        break;
      }
  return lines;
}

bool maps_contain(const char* name) {
  for (const std::string& line : cuda_mappings())
    if (line.find(name) != std::string::npos) return true;
  return false;
}

// Trains briefly on the CPU as a program would: through make_strategy()'s discovery where this
// machine has no NVIDIA driver (discovery must then not load the module), and with a host
// strategy asked for by name where it has one (discovery may load it there, to find the GPUs).
void train_on_the_cpu() {
  std::ostringstream log;
  const auto strategy = gpu::nvidia_driver_present() ? make_strategy({.kind = "host", .log = &log})
                                                     : make_strategy({.log = &log});
  const ImageSet data = data::synthetic_images(64, 8, 8, 3);
  Sequential model({layers::Conv2D(4, {3, 3}, Activation::ReLU, data.sample_shape()), layers::Flatten(),
                    layers::Dense(3, Activation::Softmax)});
  model.compile(*strategy, optimizers::SGD(), {}, {metrics::Accuracy()}, 1);
  model.fit(data, {.epochs = 1, .batch_size = 16, .verbose = 0});
  model.predict(data);
  std::cout << log.str();
}

// Each check runs in a fresh process (a death test re-runs this program for it), so what another
// test loaded cannot hide or fake a mapping.
TEST(CudaModuleDeathTest, ACpuRunLoadsNoCudaLibrary) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        train_on_the_cpu();
        const std::vector<std::string> mapped = cuda_mappings();
        for (const std::string& line : mapped) std::cerr << "mapped: " << line << '\n';
        std::exit(mapped.empty() ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(CudaModuleDeathTest, TheGpuReportLoadsTheModule) {
  if (!gpu::built_with_cuda()) GTEST_SKIP() << "this build has no CUDA module (configured without CUDA)";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        const bool before = maps_contain("libmirror_cuda");
        const std::string report = gpu::version_report();
        const bool loaded = maps_contain("libmirror_cuda") && maps_contain("libcudart") && gpu::module_loaded();
        std::cerr << report;
        std::exit(!before && loaded ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "CUDA runtime");
}

class LoadFailure : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mirror_cuda_module_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void touch(const std::string& name) { std::ofstream(dir_ / name) << "not a library"; }
  std::vector<std::string> dirs() const { return {dir_.string()}; }

  fs::path dir_;
};

TEST_F(LoadFailure, NamesTheMissingLibraryTheVersionFoundAndTheFix) {
  touch("libcudnn.so.8");
  touch("libcudnn.so.8.9.7");
  touch("libcublas.so.13");  // another library: not listed
  const std::string why = gpu::explain_load_failure(
      "/opt/lib/libmirror_cuda.so.1", "libcudnn.so.9: cannot open shared object file: No such file or directory",
      "13.0", dirs());
  EXPECT_NE(why.find("/opt/lib/libmirror_cuda.so.1 needs libcudnn.so.9 (cuDNN 9)"), std::string::npos) << why;
  EXPECT_NE(why.find("found libcudnn.so.8 in " + dir_.string() + ", libcudnn.so.8.9.7 in"), std::string::npos) << why;
  EXPECT_EQ(why.find("libcublas"), std::string::npos) << why;
  EXPECT_NE(why.find("pip install nvidia-cudnn-cu13"), std::string::npos) << why;
  EXPECT_NE(why.find("libcudnn9-cuda-13"), std::string::npos) << why;
  EXPECT_NE(why.find("LD_LIBRARY_PATH"), std::string::npos) << why;
}

TEST_F(LoadFailure, EachCudaLibraryHasItsPackage) {
  const auto why = [&](const char* library) {
    return gpu::explain_load_failure("m.so", std::string(library) + ": cannot open shared object file: x", "12.8",
                                     dirs());
  };
  EXPECT_NE(why("libcudart.so.12").find("the CUDA runtime 12"), std::string::npos);
  EXPECT_NE(why("libcudart.so.12").find("cuda-cudart-12-8"), std::string::npos);
  EXPECT_NE(why("libcublasLt.so.12").find("pip install nvidia-cublas`"), std::string::npos);
  EXPECT_NE(why("libnccl.so.2").find("nvidia-nccl-cu12"), std::string::npos);
  EXPECT_NE(why("libnccl.so.2").find("libnccl2 "), std::string::npos);
  EXPECT_NE(why("libcudnn_graph.so.9").find("cuDNN 9"), std::string::npos);
  EXPECT_EQ(why("libcudart.so.12").find("found "), std::string::npos);  // nothing of it in the folder
  // A library Mirror does not know: still named, with the general fix.
  const std::string other = why("libfoo.so.3");
  EXPECT_NE(other.find("needs libfoo.so.3, which the dynamic loader cannot find"), std::string::npos) << other;
  EXPECT_EQ(other.find("pip install"), std::string::npos) << other;
}

TEST_F(LoadFailure, AMissingModuleSaysHowToGetIt) {
  const std::string why = gpu::explain_load_failure(
      "/opt/lib/libmirror_cuda.so.1", "/opt/lib/libmirror_cuda.so.1: cannot open shared object file: No such file",
      "13.0", dirs());
  EXPECT_NE(why.find("the CUDA module /opt/lib/libmirror_cuda.so.1 was not found"), std::string::npos) << why;
  EXPECT_NE(why.find("MIRROR_CUDA_MODULE"), std::string::npos) << why;
}

TEST_F(LoadFailure, OtherErrorsKeepTheLoadersWords) {
  const std::string error = "/x/libmirror_cuda.so.1: undefined symbol: cudnnBackendExecute, version libcudnn.so.9";
  const std::string why = gpu::explain_load_failure("/x/libmirror_cuda.so.1", error, "13.0", dirs());
  EXPECT_NE(why.find(error), std::string::npos) << why;
  EXPECT_NE(why.find("CUDA 13.0"), std::string::npos) << why;
}

TEST(CudaModule, SearchDirsFollowLdLibraryPath) {
  const testing::ScopedEnv path("LD_LIBRARY_PATH", "/first/dir::/second/dir");
  const std::vector<std::string> dirs = gpu::library_search_dirs();
  ASSERT_GE(dirs.size(), 3u);
  EXPECT_EQ(dirs[0], "/first/dir");
  EXPECT_EQ(dirs[1], "/second/dir");
  EXPECT_NE(std::find(dirs.begin(), dirs.end(), "/usr/lib/x86_64-linux-gnu"), dirs.end());
}

}  // namespace
}  // namespace mirror
