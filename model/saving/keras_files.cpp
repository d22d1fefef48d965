// Keras 3's files on disk: Model::save_weights / load_weights (".weights.h5", or the weights of a
// ".keras" archive), Model::save and load_model (".keras": a zip of config.json, metadata.json and
// model.weights.h5), with atomic writes so that a failed save leaves the previous file intact.
#include <fcntl.h>
#include <signal.h>
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

constexpr size_t kMaxJsonBytes = size_t{64} << 20;
// A weights file's room beyond the variables' float32 bytes: three more copies for the optimizer
// slots Keras saves beside the variables of a compiled model (Adam's two, AMSGrad's third), and
// HDF5's own records (object headers, B-trees, heaps: well under a KiB per dataset) many times over.
constexpr size_t kSlotCopies = 3;
constexpr size_t kH5FixedBytes = size_t{1} << 20;
constexpr size_t kH5BytesPerVariable = size_t{64} << 10;

std::string errno_text(int err) { return std::strerror(err); }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A temporary file older than this is removed whether or not a process of its PID lives (PIDs
// are reused): no write takes a day.
constexpr auto kStaleTemporaryAge = std::chrono::hours(24);

// Removes the temporary files that writers of `target` killed mid-write left beside it
// (".NAME.tmp-PID", write_file_atomically's names): those whose PID is no live process, and those
// older than kStaleTemporaryAge. A file whose PID lives and is recent may be another writer's at
// work, or the PID's new owner's: it stays.
void remove_stale_temporaries(const std::filesystem::path& dir, const std::string& target) {
  namespace fs = std::filesystem;
  const std::string prefix = str(".", target, ".tmp-");
  std::error_code error;
  for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto pid = static_cast<pid_t>(std::stol(digits));
    if (pid == ::getpid()) continue;
    const bool dead = pid <= 0 || (::kill(pid, 0) != 0 && errno == ESRCH);
    std::error_code time_error;
    const auto written = fs::last_write_time(it->path(), time_error);
    const bool old = !time_error && fs::file_time_type::clock::now() - written > kStaleTemporaryAge;
    std::error_code ignored;  // a file another writer removed first is gone all the same
    if (dead || old) fs::remove(it->path(), ignored);
  }
}

}  // namespace

size_t weights_file_limit(const Model& model) {
  size_t floats = 0, count = 0;
  for (const VariableInfo& v : model.variables()) floats += static_cast<size_t>(v.shape.count()), ++count;
  return floats * sizeof(float) * (1 + kSlotCopies) + kH5FixedBytes + count * kH5BytesPerVariable;
}

std::vector<uint8_t> read_file(const std::string& path, size_t max_bytes) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  MIRROR_REQUIRE(fd.get() >= 0, DataError, "cannot open ", path, ": ", errno_text(errno));
  std::vector<uint8_t> bytes;
  // Reads of the file's size as fstat gives it (plus one, to see the end), 1 MiB at the most: a
  // small file needs no large buffer. The size is a hint, and a regular file past the limit is
  // refused before a byte is read; the loop still takes only what arrives.
  struct stat st {};
  const size_t hint = ::fstat(fd.get(), &st) == 0 && st.st_size > 0 ? static_cast<size_t>(st.st_size) + 1 : 0;
  MIRROR_REQUIRE(!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) <= max_bytes, DataError, path, " holds ",
                 st.st_size, " bytes, more than the ", max_bytes,
                 " bytes it may hold here; it is damaged or not the file meant");
  std::vector<uint8_t> chunk(std::clamp(hint, size_t{4096}, size_t{1} << 20));
  for (;;) {
    const ssize_t n = ::read(fd.get(), chunk.data(), chunk.size());
    if (n < 0 && errno == EINTR) continue;
    MIRROR_REQUIRE(n >= 0, DataError, "cannot read ", path, ": ", errno_text(errno));
    if (n == 0) break;
    MIRROR_REQUIRE(bytes.size() + static_cast<size_t>(n) <= max_bytes, DataError, path, " is larger than the ",
                   max_bytes, " bytes it may hold here; it is damaged or not the file meant");
    bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + n);
  }
  return bytes;
}

void write_file_atomically(const std::string& path, std::span<const uint8_t> bytes) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  remove_stale_temporaries(dir, target.filename().string());
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

ZipReader::ZipReader(std::span<const uint8_t> bytes, std::string source) : source_(std::move(source)) {
  zip_error_t error;
  zip_error_init(&error);
  ZipSource src{zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error)};
  MIRROR_REQUIRE(src.source != nullptr, DataError, source_, ": ", zip_error_strerror(&error));
  archive_ = zip_open_from_source(src.source, ZIP_RDONLY | ZIP_CHECKCONS, &error);
  if (!archive_) {
    const std::string why = zip_error_strerror(&error);
    zip_error_fini(&error);
    throw DataError(str(source_, " is not a Keras archive (a zip file): ", why));
  }
  src.source = nullptr;  // the archive owns it now
}

ZipReader::ZipReader(const std::string& path) : source_(path) {
  int code = 0;
  archive_ = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code);
  if (archive_) return;
  const int err = errno;
  zip_error_t error;
  zip_error_init_with_code(&error, code);
  const std::string why = zip_error_strerror(&error);
  zip_error_fini(&error);
  MIRROR_REQUIRE(code != ZIP_ER_NOENT && code != ZIP_ER_OPEN && code != ZIP_ER_READ, DataError, "cannot open ", path,
                 ": ", code == ZIP_ER_NOENT ? errno_text(ENOENT) : errno_text(err));
  throw DataError(str(path, " is not a Keras archive (a zip file): ", why));
}

ZipReader::~ZipReader() {
  if (archive_) zip_discard(archive_);
}

bool ZipReader::contains(const std::string& entry) const { return zip_name_locate(archive_, entry.c_str(), 0) >= 0; }

std::vector<uint8_t> ZipReader::read(const std::string& entry, size_t max_bytes) {
  const zip_int64_t index = zip_name_locate(archive_, entry.c_str(), 0);
  MIRROR_REQUIRE(index >= 0, DataError, source_, " is not a Keras 3 archive: it has no ", entry);
  // The declared size is checked before anything is inflated; then it is a limit, not a promise:
  // inflating stops at the first byte past it.
  zip_stat_t st;
  zip_stat_init(&st);
  MIRROR_REQUIRE(zip_stat_index(archive_, static_cast<zip_uint64_t>(index), 0, &st) == 0 && (st.valid & ZIP_STAT_SIZE),
                 DataError, source_, ": cannot read the size of ", entry, ": ", zip_strerror(archive_));
  MIRROR_REQUIRE(st.size <= max_bytes, DataError, source_, ": its entry ", entry, " declares ", st.size,
                 " bytes, more than the ", max_bytes, " bytes it may hold here", entry == "model.weights.h5"
                 ? " (the model's weights, with room for optimizer slots and HDF5's own records)" : "",
                 "; the archive is damaged or not the model's");
  zip_file_t* file = zip_fopen_index(archive_, static_cast<zip_uint64_t>(index), 0);
  MIRROR_REQUIRE(file != nullptr, DataError, source_, ": cannot open ", entry, ": ", zip_strerror(archive_));
  const auto declared = static_cast<size_t>(st.size);
  std::vector<uint8_t> out;
  std::vector<uint8_t> chunk(size_t{1} << 16);
  zip_int64_t n = 0;
  // Grows as the data really arrives, one byte past the declared size at the most.
  while (out.size() <= declared &&
         (n = zip_fread(file, chunk.data(), std::min<size_t>(chunk.size(), declared + 1 - out.size()))) > 0)
    out.insert(out.end(), chunk.begin(), chunk.begin() + n);
  const std::string why = n < 0 ? zip_file_strerror(file) : "";
  zip_fclose(file);
  MIRROR_REQUIRE(out.size() <= declared, DataError, source_, ": its entry ", entry, " inflates to more than the ",
                 declared, " bytes it declares; the archive is damaged");
  MIRROR_REQUIRE(n >= 0, DataError, source_, ": cannot read ", entry, ": ", why);
  MIRROR_REQUIRE(out.size() == declared, DataError, source_, ": its entry ", entry, " inflates to ", out.size(),
                 " bytes, not the ", declared, " it declares; the archive is damaged");
  return out;
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

nlohmann::json parse_json(ZipReader& zip, const char* name, const std::string& source) {
  const std::vector<uint8_t> text = zip.read(name, kMaxJsonBytes);
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  MIRROR_REQUIRE(!j.is_discarded() && j.is_object(), DataError, source, ": ", name, " is not a JSON object");
  return j;
}

// metadata.json, once it says Keras 3 wrote the archive (the only version whose layout Mirror reads).
nlohmann::json check_version(ZipReader& zip, const std::string& source) {
  const nlohmann::json metadata = parse_json(zip, "metadata.json", source);
  const std::string version = metadata.contains("keras_version") && metadata["keras_version"].is_string()
                                  ? metadata["keras_version"].get<std::string>()
                                  : "";
  MIRROR_REQUIRE(version.rfind("3.", 0) == 0, DataError, source, " was written by Keras ",
                 version.empty() ? "of an unknown version" : version, "; Mirror reads files of Keras 3");
  return metadata;
}

std::unique_ptr<Model> model_from_zip(ZipReader& zip, const std::string& source) {
  for (const char* name : {"config.json", "metadata.json", "model.weights.h5"})
    MIRROR_REQUIRE(zip.contains(name), DataError, source, " is not a Keras 3 archive: it has no ", name);
  const nlohmann::json metadata = check_version(zip, source);
  nlohmann::json config = parse_json(zip, "config.json", source);
  restore_synchronized_flags(config, metadata, source);
  // The model comes first: its variables bound what the weights entry may inflate to.
  std::unique_ptr<Model> model = model_from_config(config, source);
  const std::vector<uint8_t> weights = zip.read("model.weights.h5", weights_file_limit(*model));
  set_weights_from(*model, read_weights_h5(weights, source + "/model.weights.h5"), source);
  return model;
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
  ZipReader zip(bytes, source);
  return model_from_zip(zip, source);
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
  const size_t limit = saving::weights_file_limit(*this);
  if (archive) {
    saving::ZipReader zip(path);
    const std::vector<uint8_t> bytes = zip.read("model.weights.h5", limit);
    saving::set_weights_from(*this, saving::read_weights_h5(bytes, path + "/model.weights.h5"), path);
  } else {
    saving::set_weights_from(*this, saving::read_weights_h5(saving::read_file(path, limit), path), path);
  }
}

void Model::save(const std::string& path) {
  MIRROR_REQUIRE(saving::ends_with(path, ".keras"), InvalidArgument,
                 "save writes a Keras archive: the file name must end in .keras (save_weights writes .weights.h5), got '", path, "'");
  saving::write_file_atomically(path, saving::keras_archive(*this));
}

std::unique_ptr<Model> load_model(const std::string& path) {
  saving::ZipReader zip(path);  // reads the zip's directory; each entry is read when needed
  return saving::model_from_zip(zip, path);
}

}  // namespace mirror
