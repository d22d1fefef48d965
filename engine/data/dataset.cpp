// Image sets from MNIST-format IDX directories, label checks, and the per-epoch shuffle and
// batching that every strategy shares, so any replica count sees the same sample order.
#include <algorithm>
#include <cstdlib>
#include <limits>

#include "mirror/engine/data/dataset.hpp"
#include "mirror/engine/error.hpp"
#include "mirror/engine/random.hpp"

namespace mirror {

int32_t ImageSet::class_count() const {
  if (labels.empty()) return 0;
  return 1 + *std::max_element(labels.begin(), labels.end());
}

ImageSet ImageSet::head(int64_t n) const {
  MIRROR_REQUIRE(n >= 0, InvalidArgument, "head(", n, "): the number of samples must not be negative");
  ImageSet out;
  out.count = std::min(n, count);
  out.height = height;
  out.width = width;
  out.channels = channels;
  const auto sample_bytes = static_cast<size_t>(sample_size());
  out.pixels.assign(pixels.begin(), pixels.begin() + static_cast<ptrdiff_t>(sample_bytes * out.count));
  out.labels.assign(labels.begin(), labels.begin() + static_cast<ptrdiff_t>(out.count));
  return out;
}

namespace data {
namespace {

constexpr const char* kExpectedFiles =
    "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
    "t10k-labels-idx1-ubyte[.gz]";
constexpr const char* kInstallHint =
    "install Debian's dataset-fashion-mnist package (sudo apt-get install dataset-fashion-mnist), or pass a "
    "directory of MNIST-format IDX files, or set MIRROR_DATA_DIR to one";

// The shuffle's Philox stream: "SHUFF" in ASCII in the low 40 bits, the epoch above them, so each
// epoch draws from its own stream and no other user of engine/random.hpp collides with it.
constexpr uint64_t kShuffleStream = 0x5348554646ULL;

// `<prefix>-<kind>-idx<rank>-ubyte`, gzipped or not; some mirrors spell it with a dot before "idx".
std::filesystem::path find_idx_file(const std::filesystem::path& dir, const std::string& prefix,
                                    const std::string& kind, int rank) {
  const std::string idx = "idx" + std::to_string(rank) + "-ubyte";
  const std::string names[] = {prefix + "-" + kind + "-" + idx, prefix + "-" + kind + "-" + idx + ".gz",
                               prefix + "-" + kind + "." + idx, prefix + "-" + kind + "." + idx + ".gz"};
  for (const auto& name : names) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(dir / name, ec)) return dir / name;
  }
  throw DataError(str("no ", names[0], "[.gz] in ", dir, ": an MNIST-format directory holds ", kExpectedFiles,
                      "; ", kInstallHint));
}

}  // namespace

std::filesystem::path default_data_dir() {
  const char* dir = std::getenv(kDataDirVariable);
  return dir && *dir ? std::filesystem::path(dir) : std::filesystem::path(kDefaultFashionMnistDir);
}

ImageSet load_idx_images(const std::filesystem::path& dir, const std::string& prefix) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    throw DataError(str("data directory ", dir, " does not exist; expected it to hold ", kExpectedFiles, "; ",
                        kInstallHint));
  }
  const auto images_path = find_idx_file(dir, prefix, "images", 3);
  const auto labels_path = find_idx_file(dir, prefix, "labels", 1);
  IdxArray images = read_idx(images_path);
  IdxArray labels = read_idx(labels_path);
  MIRROR_REQUIRE(images.dims.size() == 3, DataError, "IDX file ", images_path, " has rank ", images.dims.size(),
                 "; images must have rank 3 (count, height, width)");
  MIRROR_REQUIRE(labels.dims.size() == 1, DataError, "IDX file ", labels_path, " has rank ", labels.dims.size(),
                 "; labels must have rank 1 (count)");
  MIRROR_REQUIRE(images.dims[0] == labels.dims[0], DataError, images_path, " holds ", images.dims[0],
                 " images but ", labels_path, " holds ", labels.dims[0],
                 " labels; the counts must match (are the files from the same data set?)");

  ImageSet set;
  set.count = images.dims[0];
  set.height = images.dims[1];
  set.width = images.dims[2];
  set.channels = 1;
  set.pixels = std::move(images.bytes);
  set.labels.assign(labels.bytes.begin(), labels.bytes.end());
  return set;
}

Dataset load_idx_dataset(const std::filesystem::path& dir) {
  return Dataset{load_idx_images(dir, "train"), load_idx_images(dir, "t10k")};
}

void check_labels(const ImageSet& images, int64_t class_count, const std::string& what) {
  const std::string where = what.empty() ? "" : " of the " + what;
  for (size_t i = 0; i < images.labels.size(); ++i) {
    const int32_t label = images.labels[i];
    if (label < 0 || label >= class_count) {
      throw DataError(str("label ", label, " at index ", i, where, " is outside [0, ", class_count,
                          "): the model's last layer has ", class_count, " units"));
    }
  }
}

std::vector<int32_t> shuffled_indices(int64_t count, uint64_t seed, uint64_t epoch) {
  MIRROR_REQUIRE(count >= 0 && count <= std::numeric_limits<int32_t>::max(), InvalidArgument, "cannot shuffle ",
                 count, " samples: the count must be in [0, 2^31)");
  std::vector<int32_t> order(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) order[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  // Fisher-Yates from the end; draw i depends only on (seed, epoch, i), never on draw order.
  const uint64_t stream = kShuffleStream ^ (epoch << 40);
  for (int64_t i = count - 1; i > 0; --i) {
    const auto j = random::below(seed, stream, static_cast<uint64_t>(i), static_cast<uint64_t>(i) + 1);
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

int64_t batch_count(int64_t count, int64_t batch_size) {
  MIRROR_REQUIRE(batch_size > 0, InvalidArgument, "batch_size must be positive, got ", batch_size,
                 " (Keras's default is 32)");
  MIRROR_REQUIRE(count >= 0, InvalidArgument, "sample count must not be negative, got ", count);
  return (count + batch_size - 1) / batch_size;
}

std::span<const int32_t> batch_indices(std::span<const int32_t> order, int64_t batch_size, int64_t b) {
  const auto count = static_cast<int64_t>(order.size());
  const int64_t batches = batch_count(count, batch_size);
  MIRROR_REQUIRE(b >= 0 && b < batches, InvalidArgument, "batch ", b, " is outside [0, ", batches, "): ", count,
                 " samples in batches of ", batch_size);
  const int64_t begin = b * batch_size;
  const int64_t end = std::min(begin + batch_size, count);
  return order.subspan(static_cast<size_t>(begin), static_cast<size_t>(end - begin));
}

ImageSet synthetic_images(int64_t count, int64_t h, int64_t w, int32_t classes, uint64_t seed, int64_t channels) {
  MIRROR_REQUIRE(channels >= 1, InvalidArgument, "synthetic images need at least one channel, got ", channels);
  ImageSet set;
  set.count = count;
  set.height = h;
  set.width = w;
  set.channels = channels;
  const int64_t size = set.sample_size();
  set.pixels.resize(static_cast<size_t>(count * size));
  set.labels.resize(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const auto label = static_cast<int32_t>(random::below(seed, 1, static_cast<uint64_t>(i), static_cast<uint64_t>(classes)));
    set.labels[static_cast<size_t>(i)] = label;
    for (int64_t p = 0; p < size; ++p) {
      const float noise = random::uniform(seed, 2, static_cast<uint64_t>(i * size + p));
      const bool lit = (p % classes) == label;
      set.pixels[static_cast<size_t>(i * size + p)] = static_cast<uint8_t>((lit ? 128.0f : 0.0f) + 127.0f * noise);
    }
  }
  return set;
}

}  // namespace data
}  // namespace mirror
