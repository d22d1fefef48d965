// Tests for the IDX reader and load_idx_images: valid plain and gzipped files written into a
// temporary directory, every malformed case (with the words a user needs in the message), and
// the installed Fashion-MNIST labels.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "mirror/engine/data/dataset.hpp"
#include "mirror/engine/error.hpp"
#include "test_util.hpp"

namespace mirror::data {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

// An IDX file's bytes: magic (0, 0, type, rank), big-endian dims, then the payload.
Bytes idx_bytes(const std::vector<uint32_t>& dims, const Bytes& payload, uint8_t type = 0x08) {
  Bytes out = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(d >> shift));
  }
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

Bytes iota_bytes(size_t count, int start = 0) {
  Bytes out(count);
  for (size_t i = 0; i < count; ++i) out[i] = static_cast<uint8_t>(start + static_cast<int>(i));
  return out;
}

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "mirror_test_idx_XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  fs::path write_plain(const std::string& name, const Bytes& bytes) {
    const fs::path path = dir_ / name;
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return path;
  }

  fs::path write_gz(const std::string& name, const Bytes& bytes) {
    const fs::path path = dir_ / name;
    gzFile file = gzopen(path.c_str(), "wb");
    EXPECT_NE(file, nullptr);
    EXPECT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
    gzclose(file);
    return path;
  }

  Bytes read_raw(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in), {});
  }

  // A small MNIST-format pair: `count` images of 2x3 and labels 0..count-1.
  void write_pair(const std::string& prefix, uint32_t images, uint32_t labels, bool gz) {
    const Bytes image_file = idx_bytes({images, 2, 3}, iota_bytes(images * 6));
    const Bytes label_file = idx_bytes({labels}, iota_bytes(labels));
    if (gz) {
      write_gz(prefix + "-images-idx3-ubyte.gz", image_file);
      write_gz(prefix + "-labels-idx1-ubyte.gz", label_file);
    } else {
      write_plain(prefix + "-images-idx3-ubyte", image_file);
      write_plain(prefix + "-labels-idx1-ubyte", label_file);
    }
  }

  fs::path dir_;
};

// Runs `f`, expects a DataError and returns its message.
template <typename F>
std::string data_error_of(F&& f) {
  try {
    f();
  } catch (const DataError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected DataError, got another exception: " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected DataError, nothing was thrown";
  return {};
}

#define EXPECT_CONTAINS(text, word) EXPECT_NE((text).find(word), std::string::npos) << "in: " << (text)

TEST_F(IdxTest, ReadsPlainFile) {
  const auto path = write_plain("a-idx3-ubyte", idx_bytes({2, 3, 4}, iota_bytes(24, 5)));
  const IdxArray a = read_idx(path);
  EXPECT_EQ(a.dims, (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(a.bytes, iota_bytes(24, 5));
}

TEST_F(IdxTest, ReadsGzippedFileDetectedFromContent) {
  // No .gz suffix: the reader must look at the bytes, not the name.
  const auto path = write_gz("b-idx1-ubyte", idx_bytes({300}, iota_bytes(300)));
  ASSERT_EQ(read_raw(path).at(0), 0x1f);
  const IdxArray a = read_idx(path);
  EXPECT_EQ(a.dims, (std::vector<int64_t>{300}));
  EXPECT_EQ(a.bytes, iota_bytes(300));
}

TEST_F(IdxTest, ReadsLargeDimensionsBigEndian) {
  const auto path = write_gz("c.gz", idx_bytes({70000}, Bytes(70000, 7)));
  const IdxArray a = read_idx(path);
  ASSERT_EQ(a.dims, (std::vector<int64_t>{70000}));
  EXPECT_EQ(a.bytes.size(), 70000u);
  EXPECT_EQ(a.bytes.back(), 7);
}

TEST_F(IdxTest, MissingFileNamesIt) {
  const std::string m = data_error_of([&] { read_idx(dir_ / "nope-idx1-ubyte"); });
  EXPECT_CONTAINS(m, "nope-idx1-ubyte");
  EXPECT_CONTAINS(m, "does not exist");
}

TEST_F(IdxTest, WrongMagicSaysWhatWasFoundAndExpected) {
  const auto path = write_plain("bad-magic", {0x50, 0x4b, 0x03, 0x04, 1, 2, 3, 4});
  const std::string m = data_error_of([&] { read_idx(path); });
  EXPECT_CONTAINS(m, "bad-magic");
  EXPECT_CONTAINS(m, "magic");
  EXPECT_CONTAINS(m, "0x50 0x4b 0x03 0x04");
  EXPECT_CONTAINS(m, "expected 0x00 0x00 0x08");
}

TEST_F(IdxTest, UnsupportedTypeIsNamed) {
  const auto path = write_plain("floats", idx_bytes({1}, {0, 0, 0, 0}, 0x0D));
  const std::string m = data_error_of([&] { read_idx(path); });
  EXPECT_CONTAINS(m, "0x0d");
  EXPECT_CONTAINS(m, "float32");
  EXPECT_CONTAINS(m, "unsigned-byte");
}

TEST_F(IdxTest, TruncatedPayloadGivesBothCounts) {
  Bytes bytes = idx_bytes({4, 5}, iota_bytes(20));
  bytes.resize(bytes.size() - 8);
  for (bool gz : {false, true}) {
    const auto path = gz ? write_gz("short.gz", bytes) : write_plain("short", bytes);
    const std::string m = data_error_of([&] { read_idx(path); });
    EXPECT_CONTAINS(m, "truncated");
    EXPECT_CONTAINS(m, "promises 20 bytes");
    EXPECT_CONTAINS(m, "only 12 are present");
    EXPECT_CONTAINS(m, path.filename().string());
  }
}

TEST_F(IdxTest, TruncatedHeaderIsReported) {
  const auto path = write_plain("short-header", {0, 0, 8, 3, 0, 0, 0, 1, 0, 0});
  const std::string m = data_error_of([&] { read_idx(path); });
  EXPECT_CONTAINS(m, "truncated");
  EXPECT_CONTAINS(m, "12 bytes");
}

TEST_F(IdxTest, AbsurdDimensionsAreRejectedBeforeAllocating) {
  const auto path = write_plain("huge", idx_bytes({0xffffffff, 0xffffffff, 0xffffffff}, {1, 2, 3}));
  const std::string m = data_error_of([&] { read_idx(path); });
  EXPECT_CONTAINS(m, "too large");
  EXPECT_CONTAINS(m, "4294967295");
}

// 16 bytes whose header claims 3 GB, 512 GB or 1 TB: refused from the file's size (plain) or after
// the stream runs dry (gzip, whose buffer grows only with the data), never by allocating the claim.
TEST_F(IdxTest, HeaderClaimsBeyondTheFileAreRefusedBeforeAllocating) {
  for (const std::vector<uint32_t>& dims :
       {std::vector<uint32_t>{3000, 1000, 1000}, std::vector<uint32_t>{8192, 8192, 8192}, std::vector<uint32_t>{16384, 8192, 8192}}) {
    const Bytes bytes = idx_bytes(dims, {});
    ASSERT_EQ(bytes.size(), 16u);
    for (bool gz : {false, true}) {
      const auto path = gz ? write_gz("claim.gz", bytes) : write_plain("claim", bytes);
      const std::string m = data_error_of([&] { read_idx(path); });
      EXPECT_CONTAINS(m, path.filename().string());
      EXPECT_CONTAINS(m, "only 0 are present");
    }
  }
}

TEST_F(IdxTest, TrailingGarbageAfterTheGzipStreamIsRefused) {
  const auto path = write_gz("tail.gz", idx_bytes({3}, {1, 2, 3}));
  Bytes raw = read_raw(path);
  raw.insert(raw.end(), {'j', 'u', 'n', 'k', '!', '\n'});
  write_plain("tail.gz", raw);
  const std::string m = data_error_of([&] { read_idx(path); });
  EXPECT_CONTAINS(m, "tail.gz");
  EXPECT_CONTAINS(m, "6 bytes of trailing garbage");
}

TEST_F(IdxTest, ConcatenatedGzipMembersAreOneFile) {
  const Bytes whole = idx_bytes({6}, iota_bytes(6));
  const Bytes first = read_raw(write_gz("a.gz", Bytes(whole.begin(), whole.begin() + 9)));
  Bytes both = read_raw(write_gz("b.gz", Bytes(whole.begin() + 9, whole.end())));
  both.insert(both.begin(), first.begin(), first.end());
  const IdxArray a = read_idx(write_plain("both.gz", both));
  EXPECT_EQ(a.bytes, iota_bytes(6));
}

TEST_F(IdxTest, TrailingBytesAreCounted) {
  Bytes bytes = idx_bytes({3}, {1, 2, 3});
  bytes.insert(bytes.end(), {9, 9, 9, 9, 9});
  for (bool gz : {false, true}) {
    const auto path = gz ? write_gz("long.gz", bytes) : write_plain("long", bytes);
    const std::string m = data_error_of([&] { read_idx(path); });
    EXPECT_CONTAINS(m, "5 trailing bytes");
    EXPECT_CONTAINS(m, "after the 3 bytes");
  }
}

TEST_F(IdxTest, CorruptGzipStreamIsReported) {
  // Gzip magic and header, then garbage where the deflate stream should be.
  Bytes garbage = {0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03};
  for (int i = 0; i < 64; ++i) garbage.push_back(static_cast<uint8_t>(0xff - i));
  const auto path = write_plain("garbage.gz", garbage);
  const std::string m = data_error_of([&] { read_idx(path); });
  EXPECT_CONTAINS(m, "garbage.gz");
  EXPECT_CONTAINS(m, "not a valid gzip stream");
}

TEST_F(IdxTest, BadChecksumInGzipIsReported) {
  const auto path = write_gz("crc.gz", idx_bytes({100}, iota_bytes(100)));
  Bytes raw = read_raw(path);
  raw[raw.size() - 6] ^= 0xff;  // the CRC-32 in the gzip trailer
  write_plain("crc.gz", raw);
  const std::string m = data_error_of([&] { read_idx(path); });
  EXPECT_CONTAINS(m, "not a valid gzip stream");
  EXPECT_CONTAINS(m, "incorrect data check");  // zlib's words for a CRC mismatch
  EXPECT_CONTAINS(m, "crc.gz");
}

TEST_F(IdxTest, CutGzipFileIsReported) {
  const auto path = write_gz("cut.gz", idx_bytes({5000}, iota_bytes(5000)));
  Bytes raw = read_raw(path);
  raw.resize(raw.size() / 2);
  write_plain("cut.gz", raw);
  const std::string m = data_error_of([&] { read_idx(path); });
  EXPECT_CONTAINS(m, "cut.gz");
  EXPECT_CONTAINS(m, "unexpected end of file");  // zlib's words for a gzip stream cut short
}

TEST_F(IdxTest, LoadsPlainAndGzippedPairs) {
  write_pair("train", 4, 4, true);
  write_pair("t10k", 3, 3, false);
  const Dataset d = load_idx_dataset(dir_);
  EXPECT_EQ(d.train.count, 4);
  EXPECT_EQ(d.train.height, 2);
  EXPECT_EQ(d.train.width, 3);
  EXPECT_EQ(d.train.channels, 1);
  EXPECT_EQ(d.train.sample_shape(), (Shape{2, 3, 1}));
  EXPECT_EQ(d.train.pixels, iota_bytes(24));
  EXPECT_EQ(d.train.labels, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(d.test.count, 3);
  EXPECT_EQ(d.test.labels, (std::vector<int32_t>{0, 1, 2}));
}

TEST_F(IdxTest, AcceptsDotVariantNames) {
  write_plain("train-images.idx3-ubyte", idx_bytes({1, 1, 1}, {42}));
  write_plain("train-labels.idx1-ubyte", idx_bytes({1}, {3}));
  const ImageSet s = load_idx_images(dir_, "train");
  EXPECT_EQ(s.count, 1);
  EXPECT_EQ(s.labels.at(0), 3);
}

TEST_F(IdxTest, CountMismatchGivesBothCounts) {
  write_pair("train", 5, 4, false);
  const std::string m = data_error_of([&] { load_idx_images(dir_, "train"); });
  EXPECT_CONTAINS(m, "5 images");
  EXPECT_CONTAINS(m, "4 labels");
}

TEST_F(IdxTest, WrongRankIsReported) {
  write_plain("train-images-idx3-ubyte", idx_bytes({6}, iota_bytes(6)));
  write_plain("train-labels-idx1-ubyte", idx_bytes({6}, iota_bytes(6)));
  const std::string m = data_error_of([&] { load_idx_images(dir_, "train"); });
  EXPECT_CONTAINS(m, "rank 1");
  EXPECT_CONTAINS(m, "rank 3");
}

TEST_F(IdxTest, MissingFilesListExpectedNamesAndHowToInstall) {
  write_plain("train-images-idx3-ubyte", idx_bytes({1, 1, 1}, {0}));  // labels missing
  const std::string m = data_error_of([&] { load_idx_images(dir_, "train"); });
  EXPECT_CONTAINS(m, "train-labels-idx1-ubyte");
  EXPECT_CONTAINS(m, "t10k-images-idx3-ubyte");
  EXPECT_CONTAINS(m, "apt-get install dataset-fashion-mnist");
}

TEST_F(IdxTest, MissingDirectorySaysHowToInstall) {
  const std::string m = data_error_of([&] { load_idx_dataset(dir_ / "absent"); });
  EXPECT_CONTAINS(m, "absent");
  EXPECT_CONTAINS(m, "does not exist");
  EXPECT_CONTAINS(m, "train-images-idx3-ubyte");
  EXPECT_CONTAINS(m, "t10k-labels-idx1-ubyte");
  EXPECT_CONTAINS(m, "dataset-fashion-mnist");
  EXPECT_CONTAINS(m, "MIRROR_DATA_DIR");
}

TEST_F(IdxTest, DataDirVariableMovesTheDefault) {
  write_pair("train", 4, 4, true);
  write_pair("t10k", 3, 3, false);
  {
    mirror::testing::ScopedEnv env(kDataDirVariable, dir_.string());
    EXPECT_EQ(default_data_dir(), dir_);
    EXPECT_EQ(load_idx_dataset().train.count, 4);  // the default argument follows the variable
  }
  {
    mirror::testing::ScopedEnv env(kDataDirVariable, "");  // empty counts as unset
    EXPECT_EQ(default_data_dir(), fs::path(kDefaultFashionMnistDir));
  }
  mirror::testing::ScopedEnv env(kDataDirVariable, std::nullopt);
  EXPECT_EQ(default_data_dir(), fs::path(kDefaultFashionMnistDir));
}

// The installed data set (Debian's dataset-fashion-mnist, present on CI; MIRROR_DATA_DIR moves it).
TEST(FashionMnist, TrainLabelsAre60000InRange) {
  const fs::path dir = default_data_dir();
  if (!fs::exists(dir / "train-labels-idx1-ubyte.gz")) GTEST_SKIP() << "Fashion-MNIST is not installed at " << dir;
  const IdxArray labels = read_idx(dir / "train-labels-idx1-ubyte.gz");
  ASSERT_EQ(labels.dims, (std::vector<int64_t>{60000}));
  ASSERT_EQ(labels.bytes.size(), 60000u);
  std::vector<int> per_class(10);
  for (uint8_t label : labels.bytes) {
    ASSERT_LT(label, 10);
    ++per_class[label];
  }
  for (int c = 0; c < 10; ++c) EXPECT_EQ(per_class[c], 6000) << "class " << c;  // Fashion-MNIST is balanced
}

}  // namespace
}  // namespace mirror::data
