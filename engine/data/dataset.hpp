// The input pipeline: MNIST-format IDX files (gzipped or not), image sets held as uint8 on the
// host, per-epoch seeded shuffling and batching with the last partial batch kept.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "mirror/engine/shape.hpp"

namespace mirror {

// N images of H x W x C uint8 pixels (NHWC) with one int32 label each.
struct ImageSet {
  int64_t count = 0;
  int64_t height = 0, width = 0, channels = 1;
  std::vector<uint8_t> pixels;  // count * height * width * channels
  std::vector<int32_t> labels;  // count

  Shape sample_shape() const { return Shape{height, width, channels}; }
  int64_t sample_size() const { return height * width * channels; }
  // 1 + the largest label (0 for an empty set).
  int32_t class_count() const;
  // The first `n` samples (all when n >= count), for quick runs and tests.
  ImageSet head(int64_t n) const;
};

struct Dataset {
  ImageSet train;
  ImageSet test;
};

namespace data {

// Where Debian's dataset-fashion-mnist package puts the files.
inline constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";
// The environment variable that moves the data set for the examples, tests and benchmarks (a
// machine without the Debian package, or with the files unpacked under a private prefix).
inline constexpr const char* kDataDirVariable = "MIRROR_DATA_DIR";

// $MIRROR_DATA_DIR when it is set and not empty, else kDefaultFashionMnistDir. Read on every call,
// so a test may change it.
std::filesystem::path default_data_dir();

// One IDX file: the dimensions from its header and its uint8 payload.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> bytes;
};

// Reads an IDX file of unsigned bytes (type 0x08), gzipped or not (detected from the content).
// Throws DataError naming the file on: missing file, bad magic, unsupported type, truncated
// payload, trailing bytes.
IdxArray read_idx(const std::filesystem::path& path);

// Reads `<prefix>-images-idx3-ubyte[.gz]` and `<prefix>-labels-idx1-ubyte[.gz]` (prefix "train"
// or "t10k") from `dir`. Throws DataError when files are missing (saying which files are expected
// and how to install Fashion-MNIST) or when the image and label counts differ.
ImageSet load_idx_images(const std::filesystem::path& dir, const std::string& prefix);

// Both halves of an MNIST-format data set directory.
Dataset load_idx_dataset(const std::filesystem::path& dir = default_data_dir());

// Throws DataError if any label is outside [0, class_count), naming the label, its index and the
// class count.
void check_labels(const ImageSet& images, int64_t class_count, const std::string& what);

// A permutation of [0, count) that depends only on (seed, epoch): the same for any device or
// replica count. Fisher-Yates driven by the counter-based generator in engine/random.hpp.
std::vector<int32_t> shuffled_indices(int64_t count, uint64_t seed, uint64_t epoch);

// `count` random h x w x channels images with labels in [0, classes) drawn from `seed`; the pixel
// values at positions p (of h * w * channels) with p % classes == label are brighter, so a model
// can learn something. For tests and benchmarks that need data of a given shape without files.
ImageSet synthetic_images(int64_t count, int64_t h = 28, int64_t w = 28, int32_t classes = 10, uint64_t seed = 7,
                          int64_t channels = 1);

// Number of batches of `batch_size` in `count` samples, the last partial batch kept.
int64_t batch_count(int64_t count, int64_t batch_size);

// The indices of batch `b`: order[b*batch_size, min((b+1)*batch_size, count)).
std::span<const int32_t> batch_indices(std::span<const int32_t> order, int64_t batch_size, int64_t b);

}  // namespace data
}  // namespace mirror
