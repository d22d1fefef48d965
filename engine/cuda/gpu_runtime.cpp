// The GPU runtime seam for CUDA builds: which GPUs exist (and why none, in words a user can act
// on), backends on them, and a version report that diagnoses driver/library/architecture mismatches.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <nccl.h>

#include <cstdlib>
#include <sstream>

#include "engine/cuda/cuda_backend.hpp"
#include "engine/cuda/cuda_config.hpp"
#include "engine/cuda/kernels.hpp"
#include "engine/error.hpp"
#include "engine/gpu_runtime.hpp"

namespace mirror::gpu {
namespace {

// CUDA's encoding: 1000 * major + 10 * minor.
std::string cuda_version_string(int version) { return str(version / 1000, ".", (version % 1000) / 10); }

std::string visible_devices_note() {
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  if (!visible) return "";
  return str(" (CUDA_VISIBLE_DEVICES='", visible, "' selects which GPUs this process sees; unset it or list valid ",
             "GPU indices or UUIDs from `nvidia-smi -L`)");
}

std::string reason_for(cudaError_t status) {
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  switch (status) {
    case cudaErrorInsufficientDriver:
      if (driver == 0)
        return "no NVIDIA driver found (libcuda.so could not be loaded / cudaErrorInsufficientDriver): install "
               "the NVIDIA driver on a machine with a GPU (`nvidia-smi` should then list it)";
      return str("the NVIDIA driver supports CUDA ", cuda_version_string(driver), " but Mirror was built with CUDA ",
                 cuda_version_string(runtime), " (cudaErrorInsufficientDriver): update the driver");
    case cudaErrorNoDevice:
      return str("the NVIDIA driver is installed but no CUDA-capable GPU is visible (cudaErrorNoDevice)",
                 visible_devices_note());
    case cudaErrorInvalidDevice:
      return str("no usable GPU: the device selection is invalid (cudaErrorInvalidDevice)", visible_devices_note());
    case cudaErrorDevicesUnavailable:
      return "every GPU is busy or in exclusive-process compute mode (cudaErrorDevicesUnavailable): free a GPU or "
             "set its compute mode to default with `nvidia-smi -c DEFAULT`";
    case cudaErrorSystemDriverMismatch:
      return "the NVIDIA kernel module and libcuda.so have different versions (cudaErrorSystemDriverMismatch): "
             "reinstall the driver or reboot after an upgrade";
    case cudaErrorCompatNotSupportedOnDevice:
      return "the CUDA forward-compatibility package is installed but this GPU does not support it "
             "(cudaErrorCompatNotSupportedOnDevice): install a driver for CUDA " + cuda_version_string(runtime) +
             " or newer instead";
    default:
      return str("CUDA could not be initialised: ", cudaGetErrorName(status), " (", cudaGetErrorString(status),
                 ")", visible_devices_note());
  }
}

std::vector<int> compiled_architectures() {
  std::vector<int> archs;
  std::istringstream in(MIRROR_CUDA_ARCHITECTURES);
  std::string item;
  while (std::getline(in, item, ';'))
    if (!item.empty()) archs.push_back(std::atoi(item.c_str()));  // "90a" reads as 90
  return archs;
}

std::string compiled_architectures_string() {
  std::string out;
  for (int arch : compiled_architectures()) out += str(out.empty() ? "" : ", ", "sm_", arch);
  return out + str(" (+ PTX compute_", MIRROR_CUDA_PTX_ARCHITECTURE, ")");
}

// Native code for sm_XY runs on compute capability X.Z with Z >= Y; otherwise only the PTX can be
// JIT-compiled, if it is not newer than the GPU.
enum class Coverage { Native, PtxOnly, None };
Coverage coverage_of(int major, int minor) {
  const int cc = major * 10 + minor;
  for (int arch : compiled_architectures())
    if (arch / 10 == major && arch % 10 <= minor) return Coverage::Native;
  return std::atoi(MIRROR_CUDA_PTX_ARCHITECTURE) <= cc ? Coverage::PtxOnly : Coverage::None;
}

std::string architecture_option_with(int major, int minor) {
  return str("-Dgpu_architectures='", MIRROR_CUDA_ARCHITECTURES, ";", major * 10 + minor, "'");
}

}  // namespace

bool built_with_cuda() { return true; }

std::vector<Device> list_devices(std::string& why_none) {
  why_none.clear();
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // do not leave the error for the next CUDA call to report
    why_none = reason_for(status);
    return {};
  }
  std::vector<Device> devices;
  std::string failures;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    const cudaError_t s = cudaGetDeviceProperties(&prop, i);
    if (s != cudaSuccess) {
      cudaGetLastError();
      failures += str(failures.empty() ? "" : "; ", "GPU ", i, ": ", cudaGetErrorName(s), " (",
                      cudaGetErrorString(s), ")");
      continue;
    }
    Device d;
    d.kind = DeviceKind::GPU;
    d.index = i;
    d.description = prop.name;
    d.memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);
    d.compute_major = prop.major;
    d.compute_minor = prop.minor;
    devices.push_back(std::move(d));
  }
  if (devices.empty())
    why_none = count == 0 ? reason_for(cudaErrorNoDevice) : str("no GPU could be queried: ", failures);
  return devices;
}

std::unique_ptr<Backend> make_backend(const Device& device) {
  MIRROR_REQUIRE(device.kind == DeviceKind::GPU, InvalidArgument, "a GPU backend needs a GPU, got ", device.name());
  return cuda::make_cuda_backend(device);
}

std::string version_report() {
  std::ostringstream out;
  std::vector<std::string> problems;
  int driver = 0, runtime = 0, nccl = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  ncclGetVersion(&nccl);
  int cublas_major = 0, cublas_minor = 0, cublas_patch = 0;
  cublasGetProperty(MAJOR_VERSION, &cublas_major);
  cublasGetProperty(MINOR_VERSION, &cublas_minor);
  cublasGetProperty(PATCH_LEVEL, &cublas_patch);
  const size_t cudnn_run = cudnnGetVersion();
  // cuDNN 9 encodes 10000 * major + 100 * minor + patch.
  const auto cudnn_string = [](size_t v) { return str(v / 10000, ".", (v % 10000) / 100, ".", v % 100); };

  out << "Mirror GPU support: built with CUDA\n";
  out << "  NVIDIA driver:   " << (driver == 0 ? std::string("none found (libcuda.so could not be loaded)")
                                               : "supports CUDA " + cuda_version_string(driver))
      << "\n";
  out << "  CUDA runtime:    " << cuda_version_string(runtime) << "\n";
  out << "  cuDNN:           " << cudnn_string(cudnn_run) << " at run time, " << cudnn_string(CUDNN_VERSION)
      << " at build time\n";
  out << "  cuBLAS:          " << cublas_major << "." << cublas_minor << "." << cublas_patch << "\n";
  out << "  NCCL:            " << nccl / 10000 << "." << (nccl % 10000) / 100 << "." << nccl % 100
      << " (built with " << NCCL_MAJOR << "." << NCCL_MINOR << "." << NCCL_PATCH << ")\n";
  out << "  compiled for:    " << compiled_architectures_string() << "\n";
  out << "  TF32:            " << (cuda::tf32_allowed() ? "allowed (MIRROR_ALLOW_TF32=1)" : "off (exact float32)")
      << "\n";

  std::string why_none;
  const std::vector<Device> devices = list_devices(why_none);
  out << "  GPUs:            " << (devices.empty() ? "none: " + why_none : std::to_string(devices.size())) << "\n";
  for (const Device& d : devices) {
    out << "    " << d.index << ": " << d.description << ", " << d.memory_bytes / (1024 * 1024) << " MiB, compute "
        << "capability " << d.compute_major << "." << d.compute_minor;
    int binary = 0, ptx = 0;
    const cudaError_t probe = cuda::kernels::probe_kernel_image(d.index, &binary, &ptx);
    if (probe == cudaSuccess) {
      out << ", runs kernels built for sm_" << binary << "\n";
    } else {
      out << ", cannot run Mirror's kernels (" << cudaGetErrorName(probe) << ")\n";
    }
    const Coverage coverage = coverage_of(d.compute_major, d.compute_minor);
    if (coverage == Coverage::None || probe == cudaErrorNoKernelImageForDevice)
      problems.push_back(str("GPU ", d.index, " (", d.description, ", compute capability ", d.compute_major, ".",
                             d.compute_minor, ") has no kernels in this binary, which was compiled for ",
                             compiled_architectures_string(), ". Fix: reconfigure with ",
                             architecture_option_with(d.compute_major, d.compute_minor), " and rebuild."));
    else if (coverage == Coverage::PtxOnly)
      problems.push_back(str("GPU ", d.index, " (compute capability ", d.compute_major, ".", d.compute_minor,
                             ") runs PTX compiled at start-up (slower first launch, no tuned code). Fix: add it, ",
                             architecture_option_with(d.compute_major, d.compute_minor), "."));
  }

  if (driver == 0)
    problems.push_back("No NVIDIA driver: libcuda.so could not be loaded, so Mirror runs on the CPU. Fix: on a "
                       "machine with an NVIDIA GPU install its driver (`nvidia-smi` must work); in a container, "
                       "start it with the GPU runtime (e.g. `docker run --gpus all`).");
  else if (driver < runtime)
    problems.push_back(str("The driver supports CUDA ", cuda_version_string(driver), " but this binary uses the CUDA ",
                           cuda_version_string(runtime), " runtime. Fix: install a driver for CUDA ",
                           cuda_version_string(runtime), " or newer, or rebuild Mirror with a CUDA toolkit no newer "
                           "than ", cuda_version_string(driver), "."));
  else if (devices.empty())
    problems.push_back("No GPU visible: " + why_none + ".");
  if (cudnn_run / 10000 != CUDNN_VERSION / 10000)
    problems.push_back(str("cuDNN ", cudnn_string(cudnn_run), " was loaded but Mirror was built against ",
                           cudnn_string(CUDNN_VERSION), " (a different major version). Fix: put cuDNN ",
                           CUDNN_MAJOR, "'s lib folder first on LD_LIBRARY_PATH, or rebuild against the cuDNN "
                           "installed."));
  else if (cudnn_run < CUDNN_VERSION)
    problems.push_back(str("cuDNN ", cudnn_string(cudnn_run), " is older than the ", cudnn_string(CUDNN_VERSION),
                           " Mirror was built with; some algorithms may be missing. Fix: upgrade cuDNN."));

  out << "  diagnosis:\n";
  if (problems.empty()) out << "    no problems found\n";
  for (const std::string& p : problems) out << "    - " << p << "\n";
  return out.str();
}

}  // namespace mirror::gpu
