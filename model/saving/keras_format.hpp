// Keras 3's file formats, private to model/saving/: the layout of a ".weights.h5" file, the
// config.json of a ".keras" archive, and the order in which Keras walks a model's layers (which
// names the groups of the weights file). model/saving.hpp and model.hpp are the public side.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mirror/model/model.hpp"
#include "mirror/model/saving.hpp"

namespace mirror::saving {

// One layer as Keras's saving code sees it: the key of its group in the weights file
// ("layers/<key>/vars"), which is its class name in snake case made unique in walk order
// (conv2d, conv2d_1, ...), not the layer's own name.
struct KerasLayer {
  std::string key;
  std::string name;          // the layer's (or input's) name, saved as the group's "name" attribute
  LayerPtr layer;            // null for a functional model's InputLayer
  std::shared_ptr<Node> node;
};

// Keras's snake case of a class name: "MaxPooling2D" -> "max_pooling2d", "ReLU" -> "re_lu".
std::string to_snake_case(const std::string& class_name);

// The layers in the order Keras 3 lists model.layers: a Sequential's layers in order; a functional
// model's nodes (its InputLayer included) by decreasing depth from the output, ties in the order a
// depth-first walk from the output first meets them (keras/src/ops/function.py, map_graph).
std::vector<KerasLayer> keras_layers(const Model& model);

// A float32 array as a weights file holds it.
struct Array {
  std::vector<int64_t> shape;
  std::vector<float> values;
  friend bool operator==(const Array&, const Array&) = default;
};

// The contents of a weights file that Mirror reads and writes: each layer group's variables in
// order, by layer key, and the "name" attributes.
struct WeightsImage {
  std::string model_name;
  std::vector<std::string> keys;                    // write order
  std::map<std::string, std::string> names;         // key -> layer name
  std::map<std::string, std::vector<Array>> vars;   // key -> vars/0, vars/1, ...
};

// The model's variables (get_weights() of replica 0) as Keras lays them out.
WeightsImage weights_of(Model& model);
// Sets the model's variables from `file` (read from `source`, named in errors); checks every
// layer's variable count and every shape first, so a file that does not fit changes nothing.
void set_weights_from(Model& model, const WeightsImage& file, const std::string& source);

// What a child process that reads a weights file with libhdf5 may use (see read_weights_h5).
// Zero picks the default, which grows with the file's size.
struct IsolationLimits {
  double wall_seconds = 0;    // from fork to the child's exit; the child is killed past it
  double cpu_seconds = 0;     // the child's CPU time (RLIMIT_CPU)
  size_t memory_bytes = 0;    // beyond what the process already used when it forked
};

// HDF5 bytes of a weights file (Keras's layout) and back. `source` names the file in errors.
// Writing runs libhdf5 in this process. Reading runs it in a child process forked from the calling
// thread, within `limits`, since libhdf5 1.10 can crash, loop or exhaust memory on a damaged
// file: the child sends back plain arrays, which are checked here; a child that crashes, runs
// past a limit or sends back something malformed is a DataError naming `source`. A file is never
// opened in this process, so a damaged one cannot harm it.
std::vector<uint8_t> write_weights_h5(const WeightsImage& image);
WeightsImage read_weights_h5(std::span<const uint8_t> bytes, const std::string& source, const IsolationLimits& limits = {});

// libhdf5 is used under this lock only (reading forks while holding it, so a child never inherits
// libhdf5 halfway through a call from another thread); quiet_hdf5 turns off its printed errors.
std::unique_lock<std::mutex> lock_hdf5();
void quiet_hdf5();
// libhdf5's part of reading, in the calling process: only read_weights_h5's child calls it,
// without taking the lock (its parent holds it). It refuses sizes the image cannot hold before
// allocating, but a damaged file may still crash libhdf5 itself.
WeightsImage read_weights_h5_here(std::span<const uint8_t> bytes, const std::string& source);

// config.json of a ".keras" archive and back. Reading throws DataError naming a layer class that
// Mirror does not have, or an argument value it does not support.
nlohmann::json model_config(const Model& model);
std::unique_ptr<Model> model_from_config(const nlohmann::json& config, const std::string& source);

// Keras refuses BatchNormalization(synchronized=True) on every backend but TensorFlow, yet
// synchronizing is a property of how a run is distributed, not of the model. So an archive's
// config.json says false and its metadata.json, which Keras does not read, keeps Mirror's choice:
// {"mirror": {"synchronized_batch_normalization": [layer names]}}. The first moves the flags out of
// `config` (the value for metadata's "mirror"); the second sets them back from metadata.json,
// which may lack the entry (a file Keras wrote); a name that is no BatchNormalization of `config`
// is a DataError naming `source`.
nlohmann::json take_synchronized_flags(nlohmann::json& config);
void restore_synchronized_flags(nlohmann::json& config, const nlohmann::json& metadata, const std::string& source);

// Whole files: read (growing the buffer as data really arrives, up to `max_bytes`; a regular file
// larger than that is refused before it is read) and written atomically (a temporary file beside
// `path`, fsync, rename, fsync of the directory), so a failed write leaves the previous file intact.
std::vector<uint8_t> read_file(const std::string& path, size_t max_bytes);
// write_file_atomically is public: model/saving.hpp.

// The most bytes a weights file of `model` (built) may hold: its variables as float32, three more
// copies for the optimizer slots Keras saves with a compiled model, and room for HDF5's records.
// load_weights and load_model refuse a larger file or archive entry before reading it.
size_t weights_file_limit(const Model& model);

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

// A ".keras" archive open for reading: opening reads the zip's directory; each entry is read only
// when asked for. `source` (or the path) names the archive in errors.
class ZipReader {
 public:
  ZipReader(std::span<const uint8_t> bytes, std::string source);  // `bytes` must outlive the reader
  explicit ZipReader(const std::string& path);
  ~ZipReader();
  ZipReader(const ZipReader&) = delete;
  ZipReader& operator=(const ZipReader&) = delete;

  bool contains(const std::string& entry) const;
  // The entry's bytes. DataError naming the archive and the entry when there is none, when its
  // declared size is over `max_bytes` (checked before anything is inflated), or when it inflates
  // to other than its declared size (inflating stops at the first byte past it).
  std::vector<uint8_t> read(const std::string& entry, size_t max_bytes);

 private:
  struct zip* archive_ = nullptr;
  std::string source_;
};

std::vector<uint8_t> write_zip(const std::vector<std::pair<std::string, std::vector<uint8_t>>>& entries);

}  // namespace mirror::saving
