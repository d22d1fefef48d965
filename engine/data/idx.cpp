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

#include "mirror/engine/data/dataset.hpp"
#include "mirror/engine/error.hpp"

namespace mirror::data {
namespace {

constexpr uint8_t kTypeUnsignedByte = 0x08;
constexpr int kMaxRank = 8;
// More than any data set this reader is meant for; guards against a header of garbage that
// would otherwise ask for an absurd allocation.
constexpr int64_t kMaxPayloadBytes = int64_t{1} << 40;
constexpr unsigned kChunkBytes = 1u << 20;
// How far past its payload a gzipped file is inflated to count what follows: enough to say "5
// trailing bytes" of a small mistake, far less than a stream padded with gigabytes of zeros.
constexpr int64_t kMaxTrailingBytes = 64 * 1024;

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

// An IDX file's bytes, gunzipped when the file is gzip (told by its magic bytes, not its name).
// Decompresses with zlib's inflate itself rather than gzread, which silently ignores anything
// after the gzip stream: here every byte of the file must belong to a gzip member. Failures
// become DataErrors naming the file.
class IdxSource {
 public:
  explicit IdxSource(const std::filesystem::path& path) : path_(path) {
    errno = 0;
    file_ = std::fopen(path.c_str(), "rb");
    if (file_ == nullptr) throw DataError(str("cannot open IDX file ", path, ": ", std::strerror(errno)));
    std::error_code ec;
    file_bytes_ = static_cast<int64_t>(std::filesystem::file_size(path, ec));
    if (ec) file_bytes_ = -1;
    refill();
    gzipped_ = z_.avail_in >= 2 && in_[0] == 0x1f && in_[1] == 0x8b;
    if (gzipped_ && inflateInit2(&z_, 15 + 16) != Z_OK) throw DataError(str("zlib cannot start on ", path, ": out of memory"));
  }
  ~IdxSource() {
    if (gzipped_) inflateEnd(&z_);
    std::fclose(file_);
  }
  IdxSource(const IdxSource&) = delete;
  IdxSource& operator=(const IdxSource&) = delete;

  bool gzipped() const { return gzipped_; }
  // The file's size on disk, or -1 when it cannot be known (not a regular file).
  int64_t file_bytes() const { return file_bytes_; }

  // Reads up to `count` bytes into `data`; returns how many were read (fewer only at the end).
  int64_t read(uint8_t* data, int64_t count) {
    int64_t total = 0;
    while (total < count) {
      if (z_.avail_in == 0 && !refill()) break;
      if (!gzipped_) {
        const auto n = static_cast<int64_t>(std::min<uint64_t>(z_.avail_in, static_cast<uint64_t>(count - total)));
        std::memcpy(data + total, z_.next_in, static_cast<size_t>(n));
        z_.next_in += n, z_.avail_in -= static_cast<uInt>(n), total += n;
        continue;
      }
      if (stream_ended_) {  // another gzip member may follow; anything else is garbage
        if (z_.avail_in < 2 && !top_up()) {
          garbage_ = true;
          break;
        }
        if (z_.next_in[0] != 0x1f || z_.next_in[1] != 0x8b) {
          garbage_ = true;
          break;
        }
        inflateReset(&z_);
        stream_ended_ = false;
      }
      z_.next_out = data + total;
      z_.avail_out = static_cast<uInt>(std::min<int64_t>(count - total, kChunkBytes));
      const uInt before = z_.avail_out;
      const int rc = inflate(&z_, Z_NO_FLUSH);
      total += before - z_.avail_out;
      if (rc == Z_STREAM_END) {
        stream_ended_ = true;
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        problem_ = z_.msg ? z_.msg : "corrupt deflate data";
        throw corrupt();
      }
    }
    if (gzipped_ && !stream_ended_ && !garbage_ && total < count && problem_.empty()) problem_ = "unexpected end of file";
    return total;
  }

  // Bytes left before the end of the data, read up to `limit` + 1 of them: the count, or
  // `limit` + 1 when there are more (a gzip stream of zeros can inflate to terabytes, and the rest
  // of it is not worth inflating to say so).
  int64_t count_rest(int64_t limit) {
    std::vector<uint8_t> scratch(64 * 1024);
    int64_t total = 0;
    for (int64_t got; total <= limit; total += got) {
      got = read(scratch.data(), std::min(static_cast<int64_t>(scratch.size()), limit + 1 - total));
      if (got == 0) break;
    }
    return total;
  }

  // Bytes of the file after the last gzip member (what gunzip calls "trailing garbage"): what the
  // file's size leaves after the input consumed so far, without reading it, when the size is known.
  int64_t garbage_bytes() {
    if (!garbage_) return 0;
    const long position = std::ftell(file_);
    if (file_bytes_ >= 0 && position >= 0) return file_bytes_ - (position - static_cast<int64_t>(z_.avail_in));
    int64_t n = z_.avail_in;
    z_.avail_in = 0;
    while (refill()) n += z_.avail_in, z_.avail_in = 0;
    return n;
  }

  // What zlib found wrong with the gzip stream, or empty.
  std::string stream_problem() const { return gzipped_ ? problem_ : std::string(); }

  DataError corrupt() const {
    if (!gzipped_) return DataError(str("cannot read IDX file ", path_, ": ", std::strerror(errno)));
    return DataError(str("IDX file ", path_, " is not a valid gzip stream (zlib: ", problem_,
                         "); the download is probably damaged: fetch or install the file again"));
  }

 private:
  // Replaces the consumed input with the next block of the file; false at its end.
  bool refill() {
    const size_t got = std::fread(in_.data(), 1, in_.size(), file_);
    if (got == 0 && std::ferror(file_)) throw corrupt();
    z_.next_in = in_.data();
    z_.avail_in = static_cast<uInt>(got);
    return got > 0;
  }
  // Moves the unread input to the front and appends more of the file; false when nothing came.
  bool top_up() {
    std::memmove(in_.data(), z_.next_in, z_.avail_in);
    const size_t got = std::fread(in_.data() + z_.avail_in, 1, in_.size() - z_.avail_in, file_);
    z_.next_in = in_.data();
    z_.avail_in += static_cast<uInt>(got);
    return z_.avail_in >= 2;
  }

  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
  int64_t file_bytes_ = -1;
  std::vector<uint8_t> in_ = std::vector<uint8_t>(256 * 1024);
  z_stream z_{};
  bool gzipped_ = false, stream_ended_ = false, garbage_ = false;
  std::string problem_;
};

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string text;
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? " x " : "") + std::to_string(dims[i]);
  return text;
}

// Reads and checks the magic number and the dimensions; leaves `in` at the payload.
std::vector<int64_t> read_header(IdxSource& in, const std::filesystem::path& path, const char* kind) {
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

  IdxSource in(path);
  const char* kind = in.gzipped() ? " (after gunzip)" : "";

  IdxArray result;
  result.dims = read_header(in, path, kind);
  int64_t payload_bytes = 1;
  for (int64_t dim : result.dims) payload_bytes *= dim;
  const auto truncated = [&](int64_t present, const std::string& problem) {
    return DataError(str("IDX file ", path, " is truncated", kind, ": its header (", dims_text(result.dims), ") promises ",
                         payload_bytes, " bytes of data but only ", present, " are present",
                         problem.empty() ? "" : " (zlib: " + problem + ")", "; fetch or install the file again"));
  };
  // A header's claim is checked before anything is allocated for it: against the file's size for
  // a plain file; a gzip stream's buffer grows only as the stream really delivers data.
  const int64_t header_bytes = 4 + 4 * static_cast<int64_t>(result.dims.size());
  if (!in.gzipped() && in.file_bytes() >= 0 && in.file_bytes() - header_bytes < payload_bytes)
    throw truncated(in.file_bytes() - header_bytes, "");
  constexpr int64_t kGrowBytes = int64_t{64} << 20;
  for (int64_t present = 0; present < payload_bytes;) {
    const int64_t want = in.gzipped() ? std::min(payload_bytes - present, kGrowBytes) : payload_bytes;
    result.bytes.resize(static_cast<size_t>(present + want));
    const int64_t got = in.read(result.bytes.data() + present, want);
    present += got;
    if (got < want) throw truncated(present, in.stream_problem());
  }
  // At most kMaxTrailingBytes + 1 bytes past the payload are read to count them: a plain file's
  // rest is its size, a gzip stream's rest is only known by inflating it.
  const int64_t trailing = in.gzipped() || in.file_bytes() < 0 ? in.count_rest(kMaxTrailingBytes)
                                                               : in.file_bytes() - header_bytes - payload_bytes;
  if (trailing > 0) {
    const std::string count = in.gzipped() && trailing > kMaxTrailingBytes
                                  ? str("more than ", kMaxTrailingBytes, " trailing bytes")
                                  : str(trailing, " trailing bytes");
    throw DataError(str("IDX file ", path, " has data after the ", payload_bytes, " bytes its header (",
                        dims_text(result.dims), ") promises: ", count, kind,
                        "; it is not a well-formed IDX file: fetch or install it again"));
  }
  if (const std::string problem = in.stream_problem(); !problem.empty()) throw in.corrupt();
  if (const int64_t garbage = in.garbage_bytes(); garbage > 0) {
    throw DataError(str("IDX file ", path, " has ", garbage, " bytes of trailing garbage after its gzip stream; "
                        "it is not a well-formed .gz file: fetch or install it again"));
  }
  return result;
}

}  // namespace mirror::data
