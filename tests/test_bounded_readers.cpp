// Readers bounded by what they read: hostile files made on the fly (a .keras whose weights entry
// inflates to gigabytes, sparse gigabyte checkpoints and backups, a gzipped IDX file padded with
// gigabytes of zeros) are refused from their first bytes, and the temporary files of killed
// writers are cleared at the next write of the same file.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "mirror/engine/data/dataset.hpp"
#include "mirror/mirror.hpp"
#include "mirror/model/saving/keras_format.hpp"
#include "saving_test_util.hpp"
#include "test_util.hpp"

namespace mirror {
namespace {

using testing::cnn;
using testing::message_of;
using testing::SavingTest;
namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;
// What a reader that stops at the header may add to the process's peak memory, far below the
// gigabytes the files below would take when read whole.
constexpr long kMaxGrowthKiB = 256 * 1024;

#define EXPECT_CONTAINS(text, word) EXPECT_NE((text).find(word), std::string::npos) << "in: " << (text)

long peak_rss_kib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

uint32_t crc_of(const Bytes& bytes) {
  return static_cast<uint32_t>(crc32_z(crc32_z(0, nullptr, 0), bytes.data(), bytes.size()));
}

// A raw deflate stream of `head` followed by `zeros` zero bytes (a multiple of 1 MiB), and the
// CRC-32 of what it inflates to. The zeros are one fully flushed 1 MiB segment repeated (a full
// flush makes each segment independent of what came before), so gigabytes take milliseconds.
struct Deflated {
  Bytes bytes;
  uint32_t crc = 0;
  uint64_t inflated = 0;
};

Deflated deflate_with_zeros(const Bytes& head, uint64_t zeros) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
  const auto run = [&](const Bytes& in, int flush) {
    Bytes out(deflateBound(&z, in.size()) + 64);
    z.next_in = const_cast<uint8_t*>(in.data());
    z.avail_in = static_cast<uInt>(in.size());
    z.next_out = out.data();
    z.avail_out = static_cast<uInt>(out.size());
    const int rc = deflate(&z, flush);
    EXPECT_TRUE(rc == Z_OK || rc == Z_STREAM_END);
    EXPECT_EQ(z.avail_in, 0u);
    out.resize(out.size() - z.avail_out);
    return out;
  };
  Deflated d;
  d.bytes = run(head, Z_FULL_FLUSH);
  const Bytes mib(kMiB, 0);
  const Bytes segment = run(mib, Z_FULL_FLUSH);
  for (uint64_t done = 0; done < zeros; done += kMiB) d.bytes.insert(d.bytes.end(), segment.begin(), segment.end());
  // The CRC of the zeros by doubling: the CRC of 2^k MiB of zeros joined to itself is that of 2^(k+1).
  uLong zeros_crc = crc32_z(0, nullptr, 0), block_crc = crc_of(mib);
  for (uint64_t blocks = zeros / kMiB, block_bytes = kMiB; blocks > 0; blocks >>= 1, block_bytes *= 2) {
    if (blocks & 1) zeros_crc = crc32_combine64(zeros_crc, block_crc, static_cast<z_off64_t>(block_bytes));
    block_crc = crc32_combine64(block_crc, block_crc, static_cast<z_off64_t>(block_bytes));
  }
  const Bytes end = run({}, Z_FINISH);
  d.bytes.insert(d.bytes.end(), end.begin(), end.end());
  deflateEnd(&z);
  d.crc = static_cast<uint32_t>(crc32_combine64(crc_of(head), zeros_crc, static_cast<z_off64_t>(zeros)));
  d.inflated = head.size() + zeros;
  return d;
}

template <typename T>
void put(Bytes& out, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<uint8_t>(uint64_t(value) >> (8 * i)));
}

// A zip file written by hand, so that an entry's declared size, data and CRC are whatever the test
// says (zip64 is not needed: every size here is below 4 GiB).
struct ZipEntry {
  std::string name;
  Bytes data;  // as stored
  bool deflated = false;
  uint32_t crc = 0;
  uint64_t declared = 0;  // uncompressed size in both headers
};

ZipEntry stored(const std::string& name, const std::string& text) {
  Bytes data(text.begin(), text.end());
  return {name, data, false, crc_of(data), data.size()};
}

Bytes zip_of(const std::vector<ZipEntry>& entries) {
  Bytes out, directory;
  for (const ZipEntry& e : entries) {
    const auto offset = static_cast<uint32_t>(out.size());
    const auto header = [&](Bytes& b, bool central) {
      put<uint32_t>(b, central ? 0x02014b50 : 0x04034b50);
      if (central) put<uint16_t>(b, 20);  // made by
      put<uint16_t>(b, 20);               // needed to extract
      put<uint16_t>(b, 0);                // flags
      put<uint16_t>(b, e.deflated ? 8 : 0);
      put<uint16_t>(b, 0);       // time
      put<uint16_t>(b, 0x21);    // date: 1980-01-01
      put<uint32_t>(b, e.crc);
      put<uint32_t>(b, static_cast<uint32_t>(e.data.size()));
      put<uint32_t>(b, static_cast<uint32_t>(e.declared));
      put<uint16_t>(b, static_cast<uint16_t>(e.name.size()));
      put<uint16_t>(b, 0);  // extra field
      if (central) {
        put<uint16_t>(b, 0);  // comment
        put<uint16_t>(b, 0);  // disk
        put<uint16_t>(b, 0);  // internal attributes
        put<uint32_t>(b, 0);  // external attributes
        put<uint32_t>(b, offset);
      }
      b.insert(b.end(), e.name.begin(), e.name.end());
    };
    header(out, false);
    out.insert(out.end(), e.data.begin(), e.data.end());
    header(directory, true);
  }
  const auto directory_offset = static_cast<uint32_t>(out.size());
  out.insert(out.end(), directory.begin(), directory.end());
  put<uint32_t>(out, 0x06054b50);
  put<uint16_t>(out, 0);
  put<uint16_t>(out, 0);
  put<uint16_t>(out, static_cast<uint16_t>(entries.size()));
  put<uint16_t>(out, static_cast<uint16_t>(entries.size()));
  put<uint32_t>(out, static_cast<uint32_t>(directory.size()));
  put<uint32_t>(out, directory_offset);
  put<uint16_t>(out, 0);
  return out;
}

void write_bytes(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// ---- .keras archives ----------------------------------------------------------------------------

class BoundedKerasTest : public SavingTest {
 protected:
  void SetUp() override {
    SavingTest::SetUp();
    model_ = cnn();
    model_->compile(strategy_, optimizers::Adam());
  }
  // A .keras archive of the model whose weights entry is the real weights followed by `zeros`
  // zero bytes, deflated; it declares `declared` bytes (the true size when 0).
  std::string archive(const std::string& name, uint64_t zeros, uint64_t declared = 0) {
    const Bytes h5 = saving::write_weights_h5(saving::weights_of(*model_));
    const Deflated weights = deflate_with_zeros(h5, zeros);
    const std::string file = path(name);
    write_bytes(file, zip_of({stored("metadata.json", R"({"keras_version": "3.15.1"})"),
                              stored("config.json", saving::model_config(*model_).dump()),
                              {"model.weights.h5", weights.bytes, true, weights.crc,
                               declared ? declared : weights.inflated}}));
    return file;
  }
  std::unique_ptr<Model> model_;
};

TEST_F(BoundedKerasTest, AnArchiveOfWellFormedEntriesLoads) {
  model_->set_weights(testing::ramp(model_->get_weights().size()));
  const std::unique_ptr<Model> loaded = load_model(archive("good.keras", 0));
  EXPECT_EQ(loaded->get_weights(), model_->get_weights());
}

TEST_F(BoundedKerasTest, AWeightsEntryDeclaringGigabytesIsRefusedBeforeItIsInflated) {
  const std::string file = archive("bomb.keras", 2 * kGiB);
  const uint64_t declared = saving::write_weights_h5(saving::weights_of(*model_)).size() + 2 * kGiB;
  const long before = peak_rss_kib();
  for (const std::string& m : {message_of<DataError>([&] { load_model(file); }),
                               message_of<DataError>([&] { cnn()->load_weights(file); })}) {
    EXPECT_CONTAINS(m, "bomb.keras");
    EXPECT_CONTAINS(m, "model.weights.h5");
    EXPECT_CONTAINS(m, str("declares ", declared, " bytes"));
    EXPECT_CONTAINS(m, str("more than the ", saving::weights_file_limit(*model_), " bytes"));
  }
  EXPECT_LT(peak_rss_kib() - before, kMaxGrowthKiB);
}

TEST_F(BoundedKerasTest, AnEntryThatInflatesPastItsDeclaredSizeIsRefused) {
  const uint64_t h5_bytes = saving::write_weights_h5(saving::weights_of(*model_)).size();
  const std::string file = archive("liar.keras", 2 * kGiB, h5_bytes);
  const long before = peak_rss_kib();
  for (const std::string& m : {message_of<DataError>([&] { load_model(file); }),
                               message_of<DataError>([&] { cnn()->load_weights(file); })}) {
    EXPECT_CONTAINS(m, "liar.keras");
    EXPECT_CONTAINS(m, str("model.weights.h5 inflates to more than the ", h5_bytes, " bytes it declares"));
  }
  EXPECT_LT(peak_rss_kib() - before, kMaxGrowthKiB);
}

TEST_F(BoundedKerasTest, AWeightsFileLargerThanTheModelAllowsIsRefusedBeforeItIsRead) {
  const std::string file = path("sparse.weights.h5");
  model_->save_weights(file);
  fs::resize_file(file, 3 * kGiB);
  const long before = peak_rss_kib();
  const std::string m = message_of<DataError>([&] { cnn()->load_weights(file); });
  EXPECT_CONTAINS(m, "sparse.weights.h5 holds 3221225472 bytes");
  EXPECT_CONTAINS(m, str("more than the ", saving::weights_file_limit(*model_), " bytes"));
  EXPECT_LT(peak_rss_kib() - before, kMaxGrowthKiB);
}

// ---- checkpoints and backups ------------------------------------------------------------------

// A checkpoint file whose header lists one float32 array of `count` values, sparse up to the size
// the header promises (its CRC is not right, and nothing reads far enough to see).
void write_forged_checkpoint(const std::string& file, uint64_t count) {
  const std::string header =
      nlohmann::json{{"format", "mirror-checkpoint"},
                     {"arrays", {{{"name", "weights"}, {"type", "f32"}, {"count", count}}}}}.dump();
  Bytes bytes = {'M', 'I', 'R', 'R', 'O', 'R', 'C', 'K'};
  put<uint32_t>(bytes, 2);
  put<uint32_t>(bytes, 0);
  put<uint64_t>(bytes, header.size());
  bytes.insert(bytes.end(), header.begin(), header.end());
  write_bytes(file, bytes);
  fs::resize_file(file, bytes.size() + count * sizeof(float) + 4);
}

class BoundedCheckpointTest : public SavingTest {
 protected:
  void SetUp() override {
    SavingTest::SetUp();
    model_ = cnn();
    model_->compile(strategy_, optimizers::Adam());
  }
  std::unique_ptr<Model> model_;
};

TEST_F(BoundedCheckpointTest, AFileLongerThanItsHeaderPromisesIsRefusedFromItsHeader) {
  const std::string file = path("long.ckpt");
  model_->save_checkpoint(file);
  const auto promised = fs::file_size(file);
  fs::resize_file(file, 3 * kGiB);
  const std::vector<float> weights = model_->get_weights();
  const long before = peak_rss_kib();
  const std::string m = message_of<DataError>([&] { model_->load_checkpoint(file); });
  EXPECT_CONTAINS(m, "long.ckpt");
  EXPECT_CONTAINS(m, str("its header promises ", promised, " bytes but the file holds 3221225472"));
  EXPECT_LT(peak_rss_kib() - before, kMaxGrowthKiB);
  EXPECT_EQ(model_->get_weights(), weights);
}

TEST_F(BoundedCheckpointTest, AHeaderPromisingMoreThanTheModelHoldsIsRefusedBeforeTheArrays) {
  const std::string file = path("huge.ckpt");
  write_forged_checkpoint(file, 3 * kGiB / sizeof(float));
  const long before = peak_rss_kib();
  const std::string m = message_of<DataError>([&] { model_->load_checkpoint(file); });
  EXPECT_CONTAINS(m, "huge.ckpt holds");
  EXPECT_CONTAINS(m, "bytes a checkpoint of this model may take");
  EXPECT_LT(peak_rss_kib() - before, kMaxGrowthKiB);
}

TEST_F(BoundedCheckpointTest, AHugeBogusNewestBackupIsSkippedFromItsHeader) {
  const std::string backups = path("backups");
  fs::create_directories(backups);
  write_forged_checkpoint((fs::path(backups) / "backup-000000099999.ckpt").string(), 3 * kGiB / sizeof(float));
  const ImageSet data = testing::synthetic_images(32, 8, 8, 3, 5);
  std::ostringstream out;
  const long before = peak_rss_kib();
  model_->fit(data, {.epochs = 1, .batch_size = 16, .verbose = 0, .out = &out, .backup_dir = backups});
  EXPECT_CONTAINS(out.str(), "skipping a backup that cannot be read");
  EXPECT_CONTAINS(out.str(), "backup-000000099999.ckpt holds");
  EXPECT_CONTAINS(out.str(), "bytes a checkpoint of this model may take");
  EXPECT_LT(peak_rss_kib() - before, kMaxGrowthKiB);
  EXPECT_EQ(model_->iterations(), 2);  // it started over
}

// ---- IDX --------------------------------------------------------------------------------------

TEST(BoundedIdx, ZerosAfterTheGzippedPayloadAreNotInflatedToTheEnd) {
  const fs::path dir = fs::temp_directory_path() / ("mirror_bounded_idx_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const Bytes idx = {0, 0, 0x08, 1, 0, 0, 0, 3, 7, 8, 9};  // three labels
  const Deflated d = deflate_with_zeros(idx, 4 * kGiB);
  Bytes gz = {0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0x03};
  gz.insert(gz.end(), d.bytes.begin(), d.bytes.end());
  put<uint32_t>(gz, d.crc);
  put<uint32_t>(gz, static_cast<uint32_t>(d.inflated));
  const std::string file = (dir / "labels-idx1-ubyte.gz").string();
  write_bytes(file, gz);
  const std::string m = message_of<DataError>([&] { data::read_idx(file); });
  fs::remove_all(dir);
  EXPECT_CONTAINS(m, "labels-idx1-ubyte.gz");
  EXPECT_CONTAINS(m, "has data after the 3 bytes its header (3) promises");
  EXPECT_CONTAINS(m, "more than 65536 trailing bytes");
}

// ---- temporary files of killed writers ----------------------------------------------------------

// The PID of a process that has exited and been reaped: certainly no live process's, for now.
pid_t dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  EXPECT_GT(child, 0);
  int status = 0;
  EXPECT_EQ(::waitpid(child, &status, 0), child);
  return child;
}

TEST_F(SavingTest, AWriteRemovesTheTemporaryFilesOfDeadWritersOfTheSameFile) {
  const std::string target = path("metrics.json");
  const auto temporary = [&](const std::string& of, pid_t pid) {
    const std::string file = (dir_ / str(".", of, ".tmp-", pid)).string();
    write_bytes(file, {'x'});
    return file;
  };
  const std::string dead = temporary("metrics.json", dead_pid());
  const std::string live = temporary("metrics.json", ::getppid());  // a live writer's, as far as anyone can tell
  const std::string old = temporary("metrics.json", 1);  // a live PID too, but two days old: no writer's any more
  fs::last_write_time(old, fs::file_time_type::clock::now() - std::chrono::hours(48));
  const std::string other = temporary("other.json", dead_pid());  // another file's: not this write's business

  const std::string text = "{}";
  saving::write_file_atomically(target, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_FALSE(fs::exists(old));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(other));
  EXPECT_EQ(saving::read_file(target, 16), Bytes(text.begin(), text.end()));
}

}  // namespace
}  // namespace mirror
