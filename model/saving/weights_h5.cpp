// Keras 3's ".weights.h5" layout through HDF5's C API, in memory (the core driver), so the same
// code serves a file on disk and the weights entry of a ".keras" archive:
//   /vars                      attrs: name = the model's name
//   /layers/<key>/vars         attrs: name = the layer's name; datasets "0", "1", ... (float32)
// Reading runs in a child process (hdf5_isolation.cpp); this file is libhdf5's part of it.
#include <hdf5.h>

#include <cstring>
#include <mutex>

#include "mirror/engine/error.hpp"
#include "mirror/model/saving/keras_format.hpp"

namespace mirror::saving {
namespace {

// A move-only owner of an HDF5 identifier; closing never throws.
class H5Id {
 public:
  using Close = herr_t (*)(hid_t);
  H5Id(hid_t id, Close close) : id_(id), close_(close) {}
  H5Id(H5Id&& other) noexcept : id_(other.id_), close_(other.close_) { other.id_ = H5I_INVALID_HID; }
  H5Id& operator=(H5Id&&) = delete;
  H5Id(const H5Id&) = delete;
  ~H5Id() {
    if (id_ >= 0) close_(id_);
  }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_;
  Close close_;
};

}  // namespace

std::unique_lock<std::mutex> lock_hdf5() {
  static std::mutex mutex;
  return std::unique_lock<std::mutex>(mutex);
}

// HDF5 prints its error stack to stderr by default; Mirror reports errors by exception instead.
void quiet_hdf5() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

namespace {

H5Id checked(hid_t id, H5Id::Close close, const std::string& what) {
  MIRROR_REQUIRE(id >= 0, DataError, what);
  return H5Id(id, close);
}

void set_name_attribute(hid_t object, const std::string& value) {
  const H5Id type = checked(H5Tcopy(H5T_C_S1), H5Tclose, "HDF5: H5Tcopy failed");
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  const H5Id space = checked(H5Screate(H5S_SCALAR), H5Sclose, "HDF5: H5Screate failed");
  const H5Id attr = checked(H5Acreate2(object, "name", type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                            "HDF5: could not create the attribute 'name'");
  const char* text = value.c_str();
  MIRROR_REQUIRE(H5Awrite(attr.get(), type.get(), &text) >= 0, DataError, "HDF5: could not write the attribute 'name'");
}

H5Id create_group(hid_t parent, const std::string& path) {
  return checked(H5Gcreate2(parent, path.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose,
                 str("HDF5: could not create group ", path));
}

void write_array(hid_t group, const std::string& name, const Array& a) {
  std::vector<hsize_t> dims(a.shape.begin(), a.shape.end());
  const H5Id space = checked(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose,
                             "HDF5: H5Screate_simple failed");
  const H5Id set = checked(H5Dcreate2(group, name.c_str(), H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                           H5Dclose, str("HDF5: could not create dataset ", name));
  MIRROR_REQUIRE(H5Dwrite(set.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.values.data()) >= 0, DataError,
                 "HDF5: could not write dataset ", name);
}

// An in-memory file: the core driver without a backing store.
H5Id memory_access(size_t increment) {
  H5Id fapl = checked(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, "HDF5: H5Pcreate failed");
  MIRROR_REQUIRE(H5Pset_fapl_core(fapl.get(), increment, false) >= 0, DataError, "HDF5: H5Pset_fapl_core failed");
  return fapl;
}

}  // namespace

std::vector<uint8_t> write_weights_h5(const WeightsImage& image) {
  const auto hdf5 = lock_hdf5();
  quiet_hdf5();
  const H5Id fapl = memory_access(size_t{1} << 20);
  const H5Id file = checked(H5Fcreate("/dev/null/mirror-weights-image.h5", H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose,
                            "HDF5: could not create an in-memory file");
  {
    const H5Id top = create_group(file.get(), "vars");
    set_name_attribute(top.get(), image.model_name);
    const H5Id layers = create_group(file.get(), "layers");
    for (const std::string& key : image.keys) {
      const H5Id layer = create_group(layers.get(), key);
      const H5Id vars = create_group(layer.get(), "vars");
      set_name_attribute(vars.get(), image.names.at(key));
      const auto& arrays = image.vars.at(key);
      for (size_t i = 0; i < arrays.size(); ++i) write_array(vars.get(), std::to_string(i), arrays[i]);
    }
  }
  MIRROR_REQUIRE(H5Fflush(file.get(), H5F_SCOPE_GLOBAL) >= 0, DataError, "HDF5: H5Fflush failed");
  const ssize_t size = H5Fget_file_image(file.get(), nullptr, 0);
  MIRROR_REQUIRE(size > 0, DataError, "HDF5: H5Fget_file_image failed");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  MIRROR_REQUIRE(H5Fget_file_image(file.get(), bytes.data(), bytes.size()) == size, DataError,
                 "HDF5: H5Fget_file_image failed");
  return bytes;
}

namespace {

struct Reader {
  static constexpr hsize_t kMaxLinks = 1000000;
  const std::string& source;
  size_t file_bytes;

  bool exists(hid_t parent, const std::string& path) const { return H5Lexists(parent, path.c_str(), H5P_DEFAULT) > 0; }

  H5Id open_group(hid_t parent, const std::string& path) const {
    return checked(H5Gopen2(parent, path.c_str(), H5P_DEFAULT), H5Gclose, str(source, ": cannot open HDF5 group ", path));
  }

  std::vector<std::string> links(hid_t group, const std::string& path) const {
    H5G_info_t info{};
    MIRROR_REQUIRE(H5Gget_info(group, &info) >= 0, DataError, source, ": cannot list HDF5 group ", path);
    MIRROR_REQUIRE(info.nlinks <= kMaxLinks, DataError, source, ": HDF5 group ", path, " claims ", info.nlinks, " members");
    // One pass over the group (looking each member up by index costs a pass of its own).
    std::vector<std::string> names;
    names.reserve(info.nlinks);
    const H5L_iterate_t collect = [](hid_t, const char* name, const H5L_info_t*, void* out) -> herr_t {
      auto& list = *static_cast<std::vector<std::string>*>(out);
      const size_t n = strnlen(name, 4096);
      if (n == 0 || n == 4096 || list.size() == kMaxLinks) return -1;
      list.emplace_back(name, n);
      return 0;
    };
    hsize_t next = 0;
    MIRROR_REQUIRE(H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, &next, collect, &names) >= 0, DataError, source,
                   ": unreadable member ", names.size(), " of HDF5 group ", path);
    return names;
  }

  Array read_array(hid_t vars, const std::string& path) const {
    const H5Id set = checked(H5Dopen2(vars, path.substr(path.rfind('/') + 1).c_str(), H5P_DEFAULT), H5Dclose,
                             str(source, ": cannot open dataset ", path));
    const H5Id type = checked(H5Dget_type(set.get()), H5Tclose, str(source, ": dataset ", path, " has no type"));
    MIRROR_REQUIRE(H5Tget_class(type.get()) == H5T_FLOAT, DataError, source, ": dataset ", path,
                   " does not hold floating-point numbers");
    // HDF5 sizes its conversion buffers by the stored type, and a filter pipeline can inflate
    // data without bound: only plain 16-, 32- and 64-bit floats, stored contiguously or compactly
    // as Keras (h5py) writes them, are read.
    const size_t type_bytes = H5Tget_size(type.get());
    MIRROR_REQUIRE(type_bytes == 2 || type_bytes == 4 || type_bytes == 8, DataError, source, ": dataset ", path,
                   " holds floats of ", type_bytes, " bytes; Keras writes 2-, 4- or 8-byte floats");
    const H5Id create = checked(H5Dget_create_plist(set.get()), H5Pclose, str(source, ": dataset ", path, " has no layout"));
    const H5D_layout_t layout = H5Pget_layout(create.get());
    MIRROR_REQUIRE(layout == H5D_CONTIGUOUS || layout == H5D_COMPACT, DataError, source, ": dataset ", path,
                   " is stored chunked or virtually; Keras stores weights contiguously");
    const H5Id space = checked(H5Dget_space(set.get()), H5Sclose, str(source, ": dataset ", path, " has no shape"));
    const int rank = H5Sget_simple_extent_ndims(space.get());
    MIRROR_REQUIRE(rank >= 0 && rank <= 8, DataError, source, ": dataset ", path, " has rank ", rank);
    std::vector<hsize_t> dims(static_cast<size_t>(rank));
    H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
    Array a;
    uint64_t count = 1;
    for (hsize_t d : dims) {
      // A variable cannot hold more floats than the file has bytes (HDF5 may compress, but Keras does not).
      MIRROR_REQUIRE(d <= file_bytes && (d == 0 || count <= file_bytes / d), DataError, source, ": dataset ", path,
                     " claims more values than the ", file_bytes, "-byte file can hold");
      count *= d;
      a.shape.push_back(static_cast<int64_t>(d));
    }
    MIRROR_REQUIRE(count * 2 <= file_bytes, DataError, source, ": dataset ", path, " claims ", count,
                   " values, more than the ", file_bytes, "-byte file can hold");
    a.values.resize(count);
    MIRROR_REQUIRE(H5Dread(set.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.values.data()) >= 0, DataError,
                   source, ": cannot read dataset ", path);
    return a;
  }
};

}  // namespace

WeightsImage read_weights_h5_here(std::span<const uint8_t> bytes, const std::string& source) {
  quiet_hdf5();
  const H5Id fapl = memory_access(size_t{1} << 16);
  // HDF5 copies the image (the flags that would let it borrow ours are not reachable through the
  // property list), so `bytes` need not outlive the file.
  MIRROR_REQUIRE(H5Pset_file_image(fapl.get(), const_cast<uint8_t*>(bytes.data()), bytes.size()) >= 0, DataError,
                 "HDF5: H5Pset_file_image failed");
  // The name must not exist on disk: the core driver would read that file instead of the image.
  const H5Id file = checked(H5Fopen("/dev/null/mirror-weights-image.h5", H5F_ACC_RDONLY, fapl.get()), H5Fclose,
                            str(source, " is not a readable HDF5 file"));
  const Reader r{source, bytes.size()};
  MIRROR_REQUIRE(r.exists(file.get(), "layers"), DataError, source,
                 " is an HDF5 file but not a Keras 3 weights file: it has no group 'layers'");
  WeightsImage image;
  const H5Id layers = r.open_group(file.get(), "layers");
  for (const std::string& key : r.links(layers.get(), "layers")) {
    const std::string path = "layers/" + key + "/vars";
    image.keys.push_back(key);
    auto& arrays = image.vars[key];
    if (!r.exists(layers.get(), key) || !r.exists(layers.get(), key + "/vars")) continue;
    const H5Id vars = r.open_group(layers.get(), key + "/vars");
    const std::vector<std::string> names = r.links(vars.get(), path);
    for (size_t i = 0; i < names.size(); ++i) {
      MIRROR_REQUIRE(r.exists(vars.get(), std::to_string(i)), DataError, source, ": group ", path, " has ", names.size(),
                     " members but no dataset '", i, "'");
      arrays.push_back(r.read_array(vars.get(), path + "/" + std::to_string(i)));
    }
  }
  return image;
}

}  // namespace mirror::saving
