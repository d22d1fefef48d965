// Keras 3's files on disk: Model::save_weights / load_weights (".weights.h5", or the weights of a
// ".keras" archive), Model::save and load_model (".keras": a zip of config.json, metadata.json and
// model.weights.h5), with atomic writes so that a failed save leaves the previous file intact.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "mirror/engine/error.hpp"
#include "mirror/model/saving.hpp"
#include "mirror/model/saving/keras_format.hpp"

namespace mirror {
namespace saving {
namespace {

constexpr size_t kMaxFileBytes = size_t{16} << 30;  // far above any model Mirror trains; a bound, not a claim
constexpr size_t kMaxJsonBytes = size_t{64} << 20;

std::string errno_text(int err) { return std::strerror(err); }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A file descriptor that closes itself.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now and reports close's error (a write-back failure on some file systems).
  int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

}  // namespace

std::vector<uint8_t> read_file(const std::string& path, size_t max_bytes) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  MIRROR_REQUIRE(fd.get() >= 0, DataError, "cannot open ", path, ": ", errno_text(errno));
  std::vector<uint8_t> bytes;
  // Reads of the file's size as fstat gives it (plus one, to see the end), 1 MiB at the most: a
  // small file needs no large buffer. The size is a hint; the loop still takes what arrives.
  struct stat st {};
  const size_t hint = ::fstat(fd.get(), &st) == 0 && st.st_size > 0 ? static_cast<size_t>(st.st_size) + 1 : 0;
  std::vector<uint8_t> chunk(std::clamp(hint, size_t{4096}, size_t{1} << 20));
  for (;;) {
    const ssize_t n = ::read(fd.get(), chunk.data(), chunk.size());
    if (n < 0 && errno == EINTR) continue;
    MIRROR_REQUIRE(n >= 0, DataError, "cannot read ", path, ": ", errno_text(errno));
    if (n == 0) break;
    MIRROR_REQUIRE(bytes.size() + static_cast<size_t>(n) <= max_bytes, DataError, path, " is larger than ", max_bytes,
                   " bytes, more than a Keras file Mirror reads");
    bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + n);
  }
  return bytes;
}

void write_file_atomically(const std::string& path, std::span<const uint8_t> bytes) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string tmp = (dir / str(".", target.filename().string(), ".tmp-", ::getpid())).string();
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  MIRROR_REQUIRE(fd.get() >= 0, DataError, "cannot write ", path, ": creating ", tmp, " failed: ", errno_text(errno));
  const auto fail = [&](const char* step, int err) {
    ::unlink(tmp.c_str());
    throw DataError(str("cannot write ", path, ": ", step, " failed: ", errno_text(err), " (the previous file, if any, is unchanged)"));
  };
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("write", n < 0 ? errno : ENOSPC);
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) fail("fsync", errno);
  if (fd.close() != 0) fail("close", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename", errno);
  Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() >= 0) ::fsync(dir_fd.get());  // the rename is durable once the directory is
}

// ---- zip (libzip) -----------------------------------------------------------------------------

namespace {

struct ZipSource {
  zip_source_t* source;
  ~ZipSource() {
    if (source) zip_source_free(source);
  }
};

struct ZipArchive {
  zip_t* archive;
  ~ZipArchive() {
    if (archive) zip_discard(archive);
  }
};

}  // namespace

std::map<std::string, std::vector<uint8_t>> read_zip(std::span<const uint8_t> bytes, const std::string& source) {
  zip_error_t error;
  zip_error_init(&error);
  ZipSource src{zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error)};
  MIRROR_REQUIRE(src.source != nullptr, DataError, source, ": ", zip_error_strerror(&error));
  ZipArchive zip{zip_open_from_source(src.source, ZIP_RDONLY | ZIP_CHECKCONS, &error)};
  if (!zip.archive) {
    const std::string why = zip_error_strerror(&error);
    zip_error_fini(&error);
    throw DataError(str(source, " is not a Keras archive (a zip file): ", why));
  }
  src.source = nullptr;  // the archive owns it now
  std::map<std::string, std::vector<uint8_t>> entries;
  const zip_int64_t count = zip_get_num_entries(zip.archive, 0);
  for (zip_int64_t i = 0; i < count; ++i) {
    const char* name = zip_get_name(zip.archive, static_cast<zip_uint64_t>(i), 0);
    if (!name) continue;
    const std::string entry = name;
    if (entry != "config.json" && entry != "metadata.json" && entry != "model.weights.h5") continue;
    zip_file_t* file = zip_fopen_index(zip.archive, static_cast<zip_uint64_t>(i), 0);
    MIRROR_REQUIRE(file != nullptr, DataError, source, ": cannot open ", entry, ": ", zip_strerror(zip.archive));
    // Grow as the data really arrives: an entry's claimed size is not trusted.
    std::vector<uint8_t>& out = entries[entry];
    std::vector<uint8_t> chunk(size_t{1} << 16);
    zip_int64_t n = 0;
    const size_t limit = entry == "model.weights.h5" ? kMaxFileBytes : kMaxJsonBytes;
    while ((n = zip_fread(file, chunk.data(), chunk.size())) > 0) {
      if (out.size() + static_cast<size_t>(n) > limit) {
        zip_fclose(file);
        throw DataError(str(source, ": ", entry, " is larger than ", limit, " bytes"));
      }
      out.insert(out.end(), chunk.begin(), chunk.begin() + n);
    }
    const std::string why = n < 0 ? zip_file_strerror(file) : "";
    zip_fclose(file);
    MIRROR_REQUIRE(n == 0, DataError, source, ": cannot read ", entry, ": ", why);
  }
  return entries;
}

std::vector<uint8_t> write_zip(const std::vector<std::pair<std::string, std::vector<uint8_t>>>& entries) {
  zip_error_t error;
  zip_error_init(&error);
  ZipSource out{zip_source_buffer_create(nullptr, 0, 0, &error)};
  MIRROR_REQUIRE(out.source != nullptr, DataError, "zip: ", zip_error_strerror(&error));
  zip_source_keep(out.source);  // read the result back after zip_close
  ZipArchive zip{zip_open_from_source(out.source, ZIP_TRUNCATE, &error)};
  MIRROR_REQUIRE(zip.archive != nullptr, DataError, "zip: ", zip_error_strerror(&error));
  for (const auto& [name, data] : entries) {
    zip_source_t* s = zip_source_buffer(zip.archive, data.data(), data.size(), 0);
    MIRROR_REQUIRE(s != nullptr, DataError, "zip: ", zip_strerror(zip.archive));
    const zip_int64_t index = zip_file_add(zip.archive, name.c_str(), s, ZIP_FL_ENC_UTF_8);
    if (index < 0) {
      zip_source_free(s);
      throw DataError(str("zip: cannot add ", name, ": ", zip_strerror(zip.archive)));
    }
    // Keras writes its entries stored, not deflated; so do we (the weights hardly compress).
    zip_set_file_compression(zip.archive, static_cast<zip_uint64_t>(index), ZIP_CM_STORE, 0);
  }
  MIRROR_REQUIRE(zip_close(zip.archive) == 0, DataError, "zip: ", zip_strerror(zip.archive));
  zip.archive = nullptr;
  zip_stat_t st;
  MIRROR_REQUIRE(zip_source_stat(out.source, &st) == 0 && zip_source_open(out.source) == 0, DataError, "zip: cannot read the archive back");
  std::vector<uint8_t> bytes(static_cast<size_t>(st.size));
  const zip_int64_t n = zip_source_read(out.source, bytes.data(), bytes.size());
  zip_source_close(out.source);
  MIRROR_REQUIRE(n == static_cast<zip_int64_t>(bytes.size()), DataError, "zip: cannot read the archive back");
  return bytes;
}

// ---- Archives ---------------------------------------------------------------------------------

namespace {

std::string today() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d@%H:%M:%S", &tm);
  return text;
}

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

struct Archive {
  nlohmann::json config;  // with the synchronized flags of metadata.json set back
  std::vector<uint8_t> weights;
};

Archive read_archive(std::span<const uint8_t> bytes, const std::string& source) {
  auto entries = read_zip(bytes, source);
  for (const char* name : {"config.json", "metadata.json", "model.weights.h5"})
    MIRROR_REQUIRE(entries.count(name), DataError, source, " is not a Keras 3 archive: it has no ", name);
  const auto parse = [&](const char* name) {
    const auto& text = entries[name];
    nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
    MIRROR_REQUIRE(!j.is_discarded() && j.is_object(), DataError, source, ": ", name, " is not a JSON object");
    return j;
  };
  const nlohmann::json metadata = parse("metadata.json");
  const std::string version = metadata.contains("keras_version") && metadata["keras_version"].is_string()
                                  ? metadata["keras_version"].get<std::string>()
                                  : "";
  MIRROR_REQUIRE(version.rfind("3.", 0) == 0, DataError, source, " was written by Keras ",
                 version.empty() ? "of an unknown version" : version, "; Mirror reads files of Keras 3");
  nlohmann::json config = parse("config.json");
  restore_synchronized_flags(config, metadata, source);
  return {std::move(config), std::move(entries["model.weights.h5"])};
}

}  // namespace

std::vector<uint8_t> keras_archive(Model& model) {
  nlohmann::json config = model_config(model);
  const nlohmann::json metadata = {{"keras_version", "3.15.1"}, {"date_saved", today()}, {"mirror", take_synchronized_flags(config)}};
  return write_zip({{"metadata.json", bytes_of(metadata.dump())},
                    {"config.json", bytes_of(config.dump())},
                    {"model.weights.h5", write_weights_h5(weights_of(model))}});
}

std::unique_ptr<Model> model_from_archive(std::span<const uint8_t> bytes, const std::string& source) {
  const Archive archive = read_archive(bytes, source);
  std::unique_ptr<Model> model = model_from_config(archive.config, source);
  set_weights_from(*model, read_weights_h5(archive.weights, source + "/model.weights.h5"), source);
  return model;
}

}  // namespace saving

void Model::save_weights(const std::string& path) {
  MIRROR_REQUIRE(saving::ends_with(path, ".weights.h5"), InvalidArgument, "save_weights writes Keras's format: the file name must end in "
                 ".weights.h5, got '", path, "'");
  saving::write_file_atomically(path, saving::write_weights_h5(saving::weights_of(*this)));
}

void Model::load_weights(const std::string& path) {
  const bool archive = saving::ends_with(path, ".keras");
  MIRROR_REQUIRE(archive || saving::ends_with(path, ".weights.h5"), InvalidArgument,
                 "load_weights reads a .weights.h5 or .keras file, got '", path, "'");
  if (!built()) build_declared();  // a Sequential whose first layer declares its input shape
  const std::vector<uint8_t> bytes = saving::read_file(path, saving::kMaxFileBytes);
  if (archive) {
    const auto entries = saving::read_zip(bytes, path);
    MIRROR_REQUIRE(entries.count("model.weights.h5"), DataError, path, " is not a Keras 3 archive: it has no model.weights.h5");
    saving::set_weights_from(*this, saving::read_weights_h5(entries.at("model.weights.h5"), path + "/model.weights.h5"), path);
  } else {
    saving::set_weights_from(*this, saving::read_weights_h5(bytes, path), path);
  }
}

void Model::save(const std::string& path) {
  MIRROR_REQUIRE(saving::ends_with(path, ".keras"), InvalidArgument,
                 "save writes a Keras archive: the file name must end in .keras (save_weights writes .weights.h5), got '", path, "'");
  saving::write_file_atomically(path, saving::keras_archive(*this));
}

std::unique_ptr<Model> load_model(const std::string& path) {
  return saving::model_from_archive(saving::read_file(path, saving::kMaxFileBytes), path);
}

}  // namespace mirror
