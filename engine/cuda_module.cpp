// Loading the CUDA module (see cuda_module.hpp), and explaining in a user's words why it did not load.
#include "mirror/engine/cuda_module.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "mirror/engine/error.hpp"

// Set by engine/meson.build: MIRROR_CUDA_MODULE_FILE (the module's file name) and
// MIRROR_CUDA_BUILD_VERSION (the CUDA toolkit's, "major.minor") in CUDA builds; MIRROR_VERSION.

namespace mirror::gpu {
namespace {

namespace fs = std::filesystem;

bool file_exists(const fs::path& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

#ifdef MIRROR_CUDA_MODULE_FILE
constexpr const char* kCudaVersion = MIRROR_CUDA_BUILD_VERSION;

struct LoadedModule {
  void* handle = nullptr;
  std::string path;     // the file that was (or would have been) loaded
  std::string why_not;  // empty when loaded
};

// The folder of the library (or program) this code was linked into: libmirror's, where the
// module is installed and built beside it.
fs::path own_directory() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<const void*>(&own_directory), &info) == 0 || info.dli_fname == nullptr) return {};
  std::error_code ec;
  const fs::path self = fs::canonical(info.dli_fname, ec);
  return ec ? fs::path() : self.parent_path();
}

LoadedModule open_module() {
  LoadedModule module;
  // MIRROR_CUDA_MODULE names the module's file outright; otherwise it sits beside libmirror, or
  // wherever the loader's search finds it.
  if (const char* chosen = std::getenv("MIRROR_CUDA_MODULE"); chosen && *chosen) {
    module.path = chosen;
  } else {
    const fs::path dir = own_directory();
    module.path = !dir.empty() && file_exists(dir / MIRROR_CUDA_MODULE_FILE) ? (dir / MIRROR_CUDA_MODULE_FILE).string()
                                                                         : MIRROR_CUDA_MODULE_FILE;
  }
  dlerror();
  module.handle = dlopen(module.path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!module.handle) {
    const char* error = dlerror();
    module.why_not =
        explain_load_failure(module.path, error ? error : "unknown error", kCudaVersion, library_search_dirs());
    return module;
  }
  // The engine's table carries the build stamp; refuse a module of another build before using it.
  using Entry = const EngineModule* (*)();
  const auto entry = reinterpret_cast<Entry>(dlsym(module.handle, kEngineModuleEntry));
  if (!entry) {
    module.why_not = str("the CUDA module ", module.path, " is not Mirror's (it has no ", kEngineModuleEntry,
                         "): point MIRROR_CUDA_MODULE at libmirror_cuda from the same build as libmirror");
  } else if (const EngineModule* table = entry(); table->build_id != std::string_view(MIRROR_BUILD_ID)) {
    module.why_not = str("the CUDA module ", module.path, " comes from another build of Mirror (", table->build_id,
                         ", while this libmirror is ", MIRROR_BUILD_ID, "): install both from one build, or point ",
                         "MIRROR_CUDA_MODULE at the matching libmirror_cuda");
  }
  if (!module.why_not.empty()) {
    dlclose(module.handle);
    module.handle = nullptr;
  }
  return module;
}

// Loaded at most once: a module that failed to load is not tried again in this process.
const LoadedModule& the_module() {
  static const LoadedModule module = open_module();
  return module;
}
#endif

// One kind of CUDA library the module needs: how it is named on disk, and where to get it.
struct LibraryFamily {
  std::string_view stem;  // file names start with stem + ".so"
  std::string_view name;
  std::string_view pip;   // with "{M}" for the CUDA major version
  std::string_view deb;   // in NVIDIA's CUDA repository; "{M}", "{m}" and "{v}" (the library's major)
};

constexpr LibraryFamily kFamilies[] = {
    {"libcudart", "the CUDA runtime", "nvidia-cuda-runtime", "cuda-cudart-{M}-{m}"},
    {"libcublasLt", "cuBLAS", "nvidia-cublas", "libcublas-{M}-{m}"},
    {"libcublas", "cuBLAS", "nvidia-cublas", "libcublas-{M}-{m}"},
    {"libcudnn", "cuDNN", "nvidia-cudnn-cu{M}", "libcudnn{v}-cuda-{M}"},
    {"libnccl", "NCCL", "nvidia-nccl-cu{M}", "libnccl{v}"},
};

std::string replace_all(std::string text, std::string_view key, std::string_view value) {
  for (size_t at = text.find(key); at != std::string::npos; at = text.find(key, at + value.size()))
    text.replace(at, key.size(), value);
  return text;
}

// "libcudnn.so.9" -> "9"; "libcudnn_ops.so.9.1.0" -> "9"; "" when the name has no version.
std::string major_of(std::string_view file) {
  const size_t so = file.find(".so.");
  if (so == std::string_view::npos) return "";
  const std::string_view rest = file.substr(so + 4);
  return std::string(rest.substr(0, rest.find('.')));
}

// Other files of the same library in `dirs` ("libcudnn.so.8.9.7 in /usr/lib/x86_64-linux-gnu").
std::vector<std::string> other_versions(std::string_view wanted, const std::vector<std::string>& dirs) {
  const std::string prefix = std::string(wanted.substr(0, wanted.find(".so"))) + ".so.";
  std::vector<std::string> found;
  for (const std::string& dir : dirs) {
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string file = it->path().filename().string();
      if (file.starts_with(prefix) && file != wanted) found.push_back(str(file, " in ", dir));
    }
  }
  std::sort(found.begin(), found.end());
  found.erase(std::unique(found.begin(), found.end()), found.end());
  return found;
}

std::string missing_library(std::string_view module_path, std::string_view library, std::string_view cuda_version,
                            const std::vector<std::string>& search_dirs) {
  const std::string cuda_major(cuda_version.substr(0, cuda_version.find('.')));
  const std::string cuda_minor(cuda_version.find('.') == std::string_view::npos
                                   ? "0"
                                   : cuda_version.substr(cuda_version.find('.') + 1));
  const std::string major = major_of(library);
  const LibraryFamily* family = nullptr;
  for (const LibraryFamily& f : kFamilies)
    if (library.starts_with(std::string(f.stem) + ".so") || library.starts_with(std::string(f.stem) + "_")) {
      family = &f;
      break;
    }
  std::ostringstream out;
  out << "the CUDA module " << module_path << " needs " << library;
  if (family) out << " (" << family->name << (major.empty() ? "" : " " + major) << ")";
  out << ", which the dynamic loader cannot find";
  const std::vector<std::string> others = other_versions(library, search_dirs);
  if (!others.empty()) {
    out << "; found ";
    for (size_t i = 0; i < others.size() && i < 4; ++i) out << (i ? ", " : "") << others[i];
    if (others.size() > 4) out << " and " << others.size() - 4 << " more";
    out << ", but Mirror was built against " << library << " and another version cannot stand in for it";
  }
  out << ". Fix: ";
  if (family) {
    const auto fill = [&](std::string_view pattern) {
      return replace_all(replace_all(replace_all(std::string(pattern), "{M}", cuda_major), "{m}", cuda_minor), "{v}",
                         major);
    };
    out << "install " << family->name << (major.empty() ? "" : " " + major) << " for CUDA " << cuda_major
        << " (`pip install " << fill(family->pip) << "`, then add its lib folder to LD_LIBRARY_PATH; or the "
        << "package " << fill(family->deb) << " from NVIDIA's CUDA repository), or ";
  }
  out << "add the folder that holds " << library << " to LD_LIBRARY_PATH";
  return out.str();
}

std::vector<std::string> conf_dirs(const fs::path& conf, int depth = 0) {
  std::vector<std::string> dirs;
  std::ifstream in(conf);
  for (std::string line; std::getline(in, line);) {
    line = line.substr(0, line.find('#'));
    line.erase(0, line.find_first_not_of(" \t"));
    line.erase(line.find_last_not_of(" \t\r") + 1);
    if (line.starts_with("include") && depth < 2) {
      // "include /etc/ld.so.conf.d/*.conf": every .conf file of that folder.
      const fs::path pattern = line.substr(line.find_first_not_of(" \t", 7));
      std::error_code ec;
      std::vector<fs::path> files;
      for (fs::directory_iterator it(pattern.parent_path(), ec), end; !ec && it != end; it.increment(ec))
        if (it->path().extension() == ".conf") files.push_back(it->path());
      std::sort(files.begin(), files.end());
      for (const fs::path& f : files)
        for (std::string& d : conf_dirs(f, depth + 1)) dirs.push_back(std::move(d));
    } else if (line.starts_with("/")) {
      dirs.push_back(line);
    }
  }
  return dirs;
}

}  // namespace

const void* module_table(const char* entry, std::string& why_not) {
#ifndef MIRROR_CUDA_MODULE_FILE
  (void)entry;
  why_not = "this build of Mirror has no CUDA module";
  return nullptr;
#else
  const LoadedModule& module = the_module();
  if (!module.handle) {
    why_not = module.why_not;
    return nullptr;
  }
  using Entry = const void* (*)();
  const auto function = reinterpret_cast<Entry>(dlsym(module.handle, entry));
  if (!function) {
    why_not = str("the CUDA module ", module.path, " has no ", entry, ": it is not from this build of Mirror");
    return nullptr;
  }
  return function();
#endif
}

bool module_loaded() {
#ifdef MIRROR_CUDA_MODULE_FILE
  // Without loading it: RTLD_NOLOAD only finds a library that is loaded already.
  void* handle = dlopen(MIRROR_CUDA_MODULE_FILE, RTLD_NOW | RTLD_NOLOAD);
  if (!handle && !own_directory().empty())
    handle = dlopen((own_directory() / MIRROR_CUDA_MODULE_FILE).c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (handle) dlclose(handle);
  return handle != nullptr;
#else
  return false;
#endif
}

bool nvidia_driver_present() {
  return file_exists("/proc/driver/nvidia/version") || file_exists("/dev/nvidiactl") || file_exists("/dev/dxg");
}

std::vector<std::string> library_search_dirs() {
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("LD_LIBRARY_PATH")) {
    std::istringstream in(path);
    for (std::string dir; std::getline(in, dir, ':');)
      if (!dir.empty()) dirs.push_back(dir);
  }
  for (const char* dir : {"/usr/local/cuda/lib64", "/usr/local/cuda/lib"}) dirs.push_back(dir);
  for (std::string& dir : conf_dirs("/etc/ld.so.conf")) dirs.push_back(std::move(dir));
  for (const char* dir : {"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib",
                          "/usr/lib"})
    dirs.push_back(dir);
  // One entry per folder: /lib/x86_64-linux-gnu and /usr/lib/x86_64-linux-gnu are often one.
  std::vector<std::string> unique;
  for (const std::string& dir : dirs) {
    std::error_code ec;
    const fs::path real = fs::canonical(dir, ec);
    const std::string name = ec ? dir : real.string();
    if (std::find(unique.begin(), unique.end(), name) == unique.end()) unique.push_back(name);
  }
  return unique;
}

std::string explain_load_failure(std::string_view module_path, std::string_view dl_error,
                                 std::string_view cuda_version, const std::vector<std::string>& search_dirs) {
  // glibc's words: "<file>: cannot open shared object file: No such file or directory".
  constexpr std::string_view kNotFound = ": cannot open shared object file";
  const size_t not_found = dl_error.find(kNotFound);
  if (not_found != std::string_view::npos) {
    const std::string_view file = dl_error.substr(0, not_found);
    if (file == module_path || file.find('/') != std::string_view::npos)
      return str("the CUDA module ", module_path, " was not found (", dl_error, "): reinstall Mirror so that "
                 "libmirror_cuda is installed beside libmirror, or point MIRROR_CUDA_MODULE at it");
    return missing_library(module_path, file, cuda_version, search_dirs);
  }
  return str("the CUDA module ", module_path, " could not be loaded: ", dl_error, ". Fix: a library it needs is ",
             "older than the one Mirror was built with (CUDA ", cuda_version, "); install the versions that ",
             "`list_devices` reports as expected, or rebuild Mirror against the libraries installed");
}

}  // namespace mirror::gpu
