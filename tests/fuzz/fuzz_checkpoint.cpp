// libFuzzer target: the checkpoint reader (Model::load_checkpoint) on arbitrary bytes, once as they
// are and once with their trailing CRC-32 made right (the CRC alone rejects nearly every mutation
// before the header is read). A mirror::Error is a correct answer, after which the model's weights
// and step count must be as they were; anything else is a finding.
// `fuzz_checkpoint --make-seed DIR` writes a valid checkpoint of the target's model into DIR and
// exits: tests/fuzz/run.sh makes the seed so, as the format changes, instead of committing one.
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "mirror/mirror.hpp"

namespace {

using namespace mirror;

// One file per process and purpose, rewritten for every input and removed when the process exits
// normally (libFuzzer does, at the end of its time).
class ScratchFile {
 public:
  explicit ScratchFile(const char* purpose)
      : path_((std::filesystem::temp_directory_path() /
               ("mirror_fuzz_checkpoint_" + std::to_string(::getpid()) + "_" + purpose))
                  .string()) {}
  ~ScratchFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A tiny CNN compiled with Adam (so the checkpoint holds optimizer slots) on one host replica.
Model& model() {
  static HostStrategy* strategy = new HostStrategy(1, 1);
  static Model* m = [] {
    auto* s = new Sequential({layers::Conv2D(2, {3, 3}, Activation::ReLU, Shape{6, 6, 1}), layers::MaxPooling2D({2, 2}),
                              layers::Flatten(), layers::Dense(3, Activation::Softmax)});
    s->compile(*strategy, optimizers::Adam());
    return s;
  }();
  return *m;
}

void write_file(const std::string& path, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  if (std::fclose(f) != 0) std::abort();
}

// Loads `bytes` as a checkpoint; a failed load must leave the model as `pristine` (a checkpoint of
// it) holds it, and a load that went through is undone by loading `pristine`.
void load(const std::vector<uint8_t>& bytes) {
  static const ScratchFile input("input"), pristine("pristine");
  static const std::vector<float> weights = [] {
    model().save_checkpoint(pristine.path());
    return model().get_weights();
  }();
  write_file(input.path(), bytes.data(), bytes.size());
  try {
    model().load_checkpoint(input.path());
  } catch (const Error&) {
    if (model().get_weights() != weights || model().iterations() != 0) {
      std::fprintf(stderr, "a failed load_checkpoint changed the model\n");
      std::abort();
    }
    return;
  }
  model().load_checkpoint(pristine.path());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  for (int i = 1; i + 1 < *argc; ++i) {
    if (std::strcmp((*argv)[i], "--make-seed") != 0) continue;
    const std::string seed = (std::filesystem::path((*argv)[i + 1]) / "valid.ckpt").string();
    // Weights other than those fuzzing starts from, so that a failed load that set some shows.
    std::vector<float> weights = model().get_weights();
    for (float& w : weights) w += 1.0f;
    model().set_weights(weights);
    model().save_checkpoint(seed);
    std::printf("fuzz_checkpoint: wrote %s\n", seed.c_str());
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  load(bytes);
  if (size < 4) return 0;
  const auto crc = static_cast<uint32_t>(crc32_z(crc32_z(0, nullptr, 0), data, size - 4));
  if (std::memcmp(&crc, data + size - 4, 4) == 0) return 0;  // already right: loaded above
  std::memcpy(bytes.data() + size - 4, &crc, 4);
  load(bytes);
  return 0;
}
