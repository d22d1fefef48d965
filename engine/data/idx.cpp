// Reading MNIST-format IDX files of unsigned bytes, gzipped or plain. zlib reads both (a plain
// file passes through transparently); every way a file can be wrong becomes a DataError that
// names the file, because a bad download is the usual cause and the user must find it.
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>

#include "engine/data/dataset.hpp"
#include "engine/error.hpp"

namespace mirror::data {
namespace {

constexpr uint8_t kTypeUnsignedByte = 0x08;
constexpr int kMaxRank = 8;
// More than any data set this reader is meant for; guards against a header of garbage that
// would otherwise ask for an absurd allocation.
constexpr int64_t kMaxPayloadBytes = int64_t{1} << 40;
constexpr unsigned kChunkBytes = 1u << 20;

std::string hex_byte(uint8_t b) {
  char text[8];
  std::snprintf(text, sizeof text, "0x%02x", b);
  return text;
}

std::string type_name(uint8_t type) {
  switch (type) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "unknown";
  }
}

bool starts_with_gzip_magic(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char magic[2] = {0, 0};
  in.read(reinterpret_cast<char*>(magic), 2);
  return in.gcount() == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
}

// An open gz stream that turns zlib's failures into DataErrors naming the file.
class GzReader {
 public:
  GzReader(const std::filesystem::path& path, bool gzipped) : path_(path), gzipped_(gzipped) {
    errno = 0;
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr) {
      throw DataError(str("cannot open IDX file ", path, ": ", errno ? std::strerror(errno) : "out of memory"));
    }
    gzbuffer(file_, 256 * 1024);
  }
  ~GzReader() { gzclose(file_); }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  // Reads up to `count` bytes into `data`; returns how many were read (fewer only at the end).
  int64_t read(uint8_t* data, int64_t count) {
    int64_t total = 0;
    while (total < count) {
      const auto want = static_cast<unsigned>(std::min<int64_t>(count - total, kChunkBytes));
      const int got = gzread(file_, data + total, want);
      if (got < 0) throw corrupt();
      if (got == 0) break;
      total += got;
    }
    return total;
  }

  // Bytes left before the end of the stream (reads them).
  int64_t count_rest() {
    std::vector<uint8_t> scratch(64 * 1024);
    int64_t total = 0;
    for (int64_t got; (got = read(scratch.data(), static_cast<int64_t>(scratch.size()))) > 0;) total += got;
    return total;
  }

  // zlib reports a gzip stream cut short only through gzerror, after a short read.
  std::string stream_problem() const {
    int errnum = Z_OK;
    const char* message = gzerror(file_, &errnum);
    if (!gzipped_ || errnum == Z_OK || errnum == Z_STREAM_END) return {};
    return without_path(message ? message : "unknown zlib error");
  }

  DataError corrupt() const {
    if (!gzipped_) {
      int errnum = Z_OK;
      const char* message = gzerror(file_, &errnum);
      return DataError(str("cannot read IDX file ", path_, ": ", without_path(message ? message : "read error")));
    }
    return DataError(str("IDX file ", path_, " is not a valid gzip stream (zlib: ", stream_problem(),
                         "); the download is probably damaged: fetch or install the file again"));
  }

 private:
  // gzerror prefixes its text with the path, which our messages already give.
  std::string without_path(const std::string& message) const {
    const std::string prefix = path_.string() + ": ";
    return message.rfind(prefix, 0) == 0 ? message.substr(prefix.size()) : message;
  }

  std::filesystem::path path_;
  bool gzipped_;
  gzFile file_ = nullptr;
};

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string text;
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? " x " : "") + std::to_string(dims[i]);
  return text;
}

// Reads and checks the magic number and the dimensions; leaves `in` at the payload.
std::vector<int64_t> read_header(GzReader& in, const std::filesystem::path& path, const char* kind) {
  uint8_t magic[4] = {0, 0, 0, 0};
  const int64_t magic_bytes = in.read(magic, 4);
  if (magic_bytes < 4) {
    if (!in.stream_problem().empty()) throw in.corrupt();
    throw DataError(str("IDX file ", path, " is too short", kind, ": ", magic_bytes,
                        " bytes, fewer than the 4-byte IDX magic number"));
  }
  if (magic[0] != 0 || magic[1] != 0) {
    throw DataError(str("IDX file ", path, " has a wrong magic number", kind, ": found ", hex_byte(magic[0]), " ",
                        hex_byte(magic[1]), " ", hex_byte(magic[2]), " ", hex_byte(magic[3]),
                        ", expected 0x00 0x00 0x08 <rank> (an MNIST-format IDX file of unsigned bytes)"));
  }
  if (magic[2] != kTypeUnsignedByte) {
    throw DataError(str("IDX file ", path, " has element type ", hex_byte(magic[2]), " (", type_name(magic[2]),
                        "); only unsigned-byte IDX files (type 0x08) are supported"));
  }
  const int rank = magic[3];
  if (rank < 1 || rank > kMaxRank) {
    throw DataError(str("IDX file ", path, " declares rank ", rank, "; expected 1 to ", kMaxRank,
                        " dimensions (labels have 1, images 3)"));
  }

  std::vector<uint8_t> header(static_cast<size_t>(4 * rank));
  const int64_t header_bytes = in.read(header.data(), 4 * rank);
  if (header_bytes < 4 * rank) {
    throw DataError(str("IDX file ", path, " is truncated", kind, ": its header needs ", 4 * rank,
                        " bytes of dimensions but only ", header_bytes, " are present"));
  }
  std::vector<int64_t> dims;
  int64_t payload_bytes = 1;
  for (int i = 0; i < rank; ++i) {
    const uint8_t* p = &header[static_cast<size_t>(4 * i)];
    const int64_t dim = (int64_t{p[0]} << 24) | (int64_t{p[1]} << 16) | (int64_t{p[2]} << 8) | int64_t{p[3]};
    dims.push_back(dim);
    // Checked before multiplying so that the product cannot overflow.
    if (dim > 0 && payload_bytes > kMaxPayloadBytes / dim) {
      throw DataError(str("IDX file ", path, " declares dimensions too large to be real (", dims_text(dims),
                          "...); the header is probably corrupt"));
    }
    payload_bytes *= dim;
  }
  return dims;
}

}  // namespace

IdxArray read_idx(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw DataError(str("IDX file ", path, " does not exist"));
  if (std::filesystem::is_directory(path, ec)) throw DataError(str("IDX file ", path, " is a directory, not a file"));

  const bool gzipped = starts_with_gzip_magic(path);
  GzReader in(path, gzipped);
  const char* kind = gzipped ? " (after gunzip)" : "";

  IdxArray result;
  result.dims = read_header(in, path, kind);
  int64_t payload_bytes = 1;
  for (int64_t dim : result.dims) payload_bytes *= dim;

  result.bytes.resize(static_cast<size_t>(payload_bytes));
  const int64_t present = in.read(result.bytes.data(), payload_bytes);
  if (present < payload_bytes) {
    const std::string problem = in.stream_problem();
    throw DataError(str("IDX file ", path, " is truncated", kind, ": its header (", dims_text(result.dims),
                        ") promises ", payload_bytes, " bytes of data but only ", present, " are present",
                        problem.empty() ? "" : " (zlib: " + problem + ")", "; fetch or install the file again"));
  }
  const int64_t trailing = in.count_rest();
  if (trailing > 0) {
    throw DataError(str("IDX file ", path, " has ", trailing, " trailing bytes", kind, " after the ", payload_bytes,
                        " bytes its header (", dims_text(result.dims),
                        ") describes; it is not a well-formed IDX file"));
  }
  if (const std::string problem = in.stream_problem(); !problem.empty()) throw in.corrupt();
  return result;
}

}  // namespace mirror::data
