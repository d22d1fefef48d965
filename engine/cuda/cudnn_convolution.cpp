// cuDNN convolutions with Keras's HWIO kernels (see cudnn_convolution.hpp for the layout choice).
#include "mirror/engine/cuda/cudnn_convolution.hpp"

#include <algorithm>
#include <climits>
#include <iterator>
#include <optional>
#include <string>

#include "mirror/engine/cuda/cuda_handles.hpp"
#include "mirror/engine/cuda/kernels.hpp"
#include "mirror/engine/verbosity.hpp"

namespace mirror::cuda {
namespace {

// Algorithms needing more scratch than this are passed over.
constexpr size_t kMaxWorkspaceBytes = size_t{1} << 30;

struct TensorTraits {
  static void destroy(cudnnTensorDescriptor_t d) noexcept { cudnnDestroyTensorDescriptor(d); }
};
struct FilterTraits {
  static void destroy(cudnnFilterDescriptor_t d) noexcept { cudnnDestroyFilterDescriptor(d); }
};
struct ConvTraits {
  static void destroy(cudnnConvolutionDescriptor_t d) noexcept { cudnnDestroyConvolutionDescriptor(d); }
};
using TensorDesc = UniqueHandle<cudnnTensorDescriptor_t, TensorTraits>;
using FilterDesc = UniqueHandle<cudnnFilterDescriptor_t, FilterTraits>;
using ConvDesc = UniqueHandle<cudnnConvolutionDescriptor_t, ConvTraits>;

int as_int(int64_t value, const char* what) {
  MIRROR_REQUIRE(value > 0 && value <= INT_MAX, InvalidArgument, "convolution ", what, " = ", value,
                 " is outside what cuDNN accepts (1 .. ", INT_MAX, ")");
  return static_cast<int>(value);
}

int as_padding(int64_t value, const char* what) {
  MIRROR_REQUIRE(value >= 0 && value <= INT_MAX, InvalidArgument, "convolution ", what, " = ", value,
                 " is outside what cuDNN accepts (0 .. ", INT_MAX, ")");
  return static_cast<int>(value);
}

TensorDesc nhwc_tensor(int64_t n, int64_t h, int64_t w, int64_t c) {
  cudnnTensorDescriptor_t d = nullptr;
  MIRROR_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d));
  TensorDesc owner(d);
  MIRROR_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, as_int(n, "batch"),
                                                as_int(c, "channels"), as_int(h, "height"), as_int(w, "width")));
  return owner;
}

ConvDesc conv_descriptor(const ConvGeometry& g, cudnnMathType_t math) {
  cudnnConvolutionDescriptor_t d = nullptr;
  MIRROR_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d));
  ConvDesc owner(d);
  MIRROR_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(d, as_padding(g.pad_top, "pad_top"),
                                                     as_padding(g.pad_left, "pad_left"), as_int(g.stride_h, "stride_h"),
                                                     as_int(g.stride_w, "stride_w"), 1, 1, CUDNN_CROSS_CORRELATION,
                                                     CUDNN_DATA_FLOAT));
  MIRROR_CUDNN_CHECK(cudnnSetConvolutionMathType(d, math));
  return owner;
}

// The fastest usable result of a cudnnFind call (results come sorted by time), preferring
// deterministic algorithms when asked. Without TF32 only CUDNN_FMA_MATH results are exact float32:
// for float data CUDNN_DEFAULT_MATH lets cuDNN use TF32 tensor cores on Ampere and later.
template <typename Perf>
std::optional<Perf> pick(const Perf* results, int count, bool allow_tf32, bool prefer_deterministic) {
  std::optional<Perf> fastest;
  for (int i = 0; i < count; ++i) {
    const Perf& p = results[i];
    if (p.status != CUDNN_STATUS_SUCCESS || p.memory > kMaxWorkspaceBytes) continue;
    if (!allow_tf32 && p.mathType != CUDNN_FMA_MATH) continue;
    if (!prefer_deterministic || p.determinism == CUDNN_DETERMINISTIC) return p;
    if (!fastest) fastest = p;
  }
  return fastest;
}

std::string describe(const ConvGeometry& g) {
  return str("batch ", g.batch, ", input ", g.in_h, "x", g.in_w, "x", g.in_c, ", kernel ", g.kernel_h, "x", g.kernel_w,
             " -> ", g.out_c, " channels, stride ", g.stride_h, "x", g.stride_w, ", padding ", g.pad_top, "x", g.pad_left);
}

[[noreturn]] void no_algorithm(const char* direction, const ConvGeometry& g, bool allow_tf32) {
  throw DeviceError(str("cuDNN found no usable ", direction, " convolution algorithm for ", describe(g),
                        allow_tf32 ? std::string()
                                   : "; exact float32 (FMA) was required: MIRROR_ALLOW_TF32=1 admits TF32 ones"));
}

// cudnnFind allocates its trial buffers with cudaMalloc, outside Mirror's pool. cuDNN 9 names the
// device and host cases apart; 8 had one code for both.
bool out_of_memory(cudnnStatus_t status) {
#if CUDNN_MAJOR >= 9
  return status == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED ||
         status == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
#else
  return status == CUDNN_STATUS_ALLOC_FAILED;
#endif
}

const char* algorithm_name(cudnnConvolutionFwdAlgo_t algo) {
  static constexpr const char* kNames[] = {"IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT",
                                           "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
  const auto i = static_cast<size_t>(algo);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

const char* algorithm_name(cudnnConvolutionBwdFilterAlgo_t algo) {
  static constexpr const char* kNames[] = {"ALGO_0", "ALGO_1", "FFT", "ALGO_3",
                                           "WINOGRAD", "WINOGRAD_NONFUSED", "FFT_TILING"};
  const auto i = static_cast<size_t>(algo);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

const char* algorithm_name(cudnnConvolutionBwdDataAlgo_t algo) {
  static constexpr const char* kNames[] = {"ALGO_0", "ALGO_1", "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
  const auto i = static_cast<size_t>(algo);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

const char* math_name(cudnnMathType_t math) {
  switch (math) {
    case CUDNN_DEFAULT_MATH: return "default math";
    case CUDNN_TENSOR_OP_MATH: return "tensor-op math";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION: return "tensor-op math with conversion";
    case CUDNN_FMA_MATH: return "FMA math";
  }
  return "unknown math";
}

}  // namespace

// g's padding split into the part a cuDNN descriptor takes (the same on both sides) and the rest,
// applied explicitly: `inner` is the convolution cuDNN runs, on the input grown by `extra`.
struct SplitPadding {
  ConvGeometry inner;
  kernels::ImagePadding extra;
  bool explicit_padding() const { return extra.top || extra.left || extra.bottom || extra.right; }
};

static SplitPadding split_padding(const ConvGeometry& g) {
  MIRROR_REQUIRE(g.pad_top >= 0 && g.pad_left >= 0 && g.pad_bottom >= 0 && g.pad_right >= 0, InvalidArgument,
                 "convolution padding ", g.pad_top, ", ", g.pad_left, ", ", g.pad_bottom, ", ", g.pad_right,
                 " (top, left, bottom, right) is negative");
  const int64_t both_h = std::min(g.pad_top, g.pad_bottom), both_w = std::min(g.pad_left, g.pad_right);
  SplitPadding s{g, {g.batch, g.in_h, g.in_w, g.in_c, g.pad_top - both_h, g.pad_left - both_w,
                     g.pad_bottom - both_h, g.pad_right - both_w}};
  s.inner.in_h = s.extra.padded_h();
  s.inner.in_w = s.extra.padded_w();
  s.inner.pad_top = s.inner.pad_bottom = both_h;
  s.inner.pad_left = s.inner.pad_right = both_w;
  return s;
}

struct CudnnConvolutions::Plan {
  ConvGeometry geometry;
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc forward_conv, weights_conv, data_conv;  // one per direction: each keeps its math type
  std::optional<cudnnConvolutionFwdAlgoPerf_t> forward;
  std::optional<cudnnConvolutionBwdFilterAlgoPerf_t> weights;
  std::optional<cudnnConvolutionBwdDataAlgoPerf_t> data;
};

CudnnConvolutions::CudnnConvolutions(cudnnHandle_t handle, cudaStream_t stream, Allocate allocate,
                                     FreeCache free_cache, bool allow_tf32)
    : handle_(handle),
      stream_(stream),
      allocate_(std::move(allocate)),
      free_cache_(std::move(free_cache)),
      allow_tf32_(allow_tf32) {}

CudnnConvolutions::~CudnnConvolutions() = default;

CudnnConvolutions::Plan& CudnnConvolutions::plan_for(const ConvGeometry& g) {
  for (auto& plan : plans_)
    if (plan->geometry == g) return *plan;
  MIRROR_REQUIRE(g.out_h() >= 1 && g.out_w() >= 1, InvalidArgument, "convolution kernel ", g.kernel_h, "x",
                 g.kernel_w, " does not fit the ", g.in_h, "x", g.in_w, " input padded by ", g.pad_top, "x",
                 g.pad_left);
  auto plan = std::make_unique<Plan>();
  plan->geometry = g;
  plan->x = nhwc_tensor(g.batch, g.in_h, g.in_w, g.in_c);
  plan->y = nhwc_tensor(g.batch, g.out_h(), g.out_w(), g.out_c);
  cudnnFilterDescriptor_t w = nullptr;
  MIRROR_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
  plan->w = FilterDesc(w);
  MIRROR_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, as_int(g.out_c, "out_c"),
                                                as_int(g.in_c, "in_c"), as_int(g.kernel_h, "kernel_h"),
                                                as_int(g.kernel_w, "kernel_w")));
  const cudnnMathType_t math = allow_tf32_ ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
  plan->forward_conv = conv_descriptor(g, math);
  plan->weights_conv = conv_descriptor(g, math);
  plan->data_conv = conv_descriptor(g, math);
  int n = 0, c = 0, h = 0, wd = 0;
  MIRROR_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(plan->forward_conv.get(), plan->x.get(), w, &n, &c, &h, &wd));
  MIRROR_REQUIRE(n == g.batch && c == g.out_c && h == g.out_h() && wd == g.out_w(), DeviceError,
                 "cuDNN's convolution output ", n, "x", h, "x", wd, "x", c, " differs from Mirror's ", g.batch, "x",
                 g.out_h(), "x", g.out_w(), "x", g.out_c);
  plans_.push_back(std::move(plan));
  return *plans_.back();
}

template <typename Find>
void CudnnConvolutions::search(const char* direction, const ConvGeometry& g, Find find) {
  cudnnStatus_t status = find();
  if (out_of_memory(status)) {
    workspace_ = DeviceBuffer();  // back to the pool (in stream order), which frees it with the rest
    free_cache_();
    cudaGetLastError();  // the failed cudaMalloc inside cuDNN left its error behind
    status = find();
  }
  // A trial that failed inside the search (an algorithm whose workspace did not fit) may leave its
  // error as the thread's last CUDA error; the next launch check would blame it on Mirror's kernel.
  cudaGetLastError();
  if (status != CUDNN_STATUS_SUCCESS)
    throw DeviceError(str("cuDNN's ", direction, " algorithm search failed for ", describe(g), ": ",
                          cudnnGetErrorString(status), " (", static_cast<int>(status), ")",
                          out_of_memory(status) ? "; even after freeing Mirror's cached GPU memory: use a smaller "
                                                  "batch size or fewer replicas per GPU"
                                                : ""));
}

template <typename Perf>
void CudnnConvolutions::choose(const char* direction, const ConvGeometry& g, cudnnConvolutionDescriptor_t conv,
                               const Perf* results, int returned, bool prefer_deterministic,
                               std::optional<Perf>& chosen) {
  chosen = pick(results, returned, allow_tf32_, prefer_deterministic);
  if (!chosen) no_algorithm(direction, g, allow_tf32_);
  // Execute with the math type the algorithm was measured with: with another one the same algorithm
  // id may run a different kernel (or, with the default, TF32).
  MIRROR_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, chosen->mathType));
  if (verbosity() >= 2) {
    int device = -1;
    MIRROR_CUDA_CHECK(cudaGetDevice(&device));
    verbose_log(2, str("Mirror: cuDNN ", direction, " convolution on GPU ", device, " for ", describe(g), ": ",
                       algorithm_name(chosen->algo), ", ", math_name(chosen->mathType), ", ", chosen->time,
                       " ms, workspace ", chosen->memory, " bytes (", returned, " algorithms tried)"));
  }
}

void* CudnnConvolutions::workspace(size_t num_bytes) {
  if (num_bytes == 0) return nullptr;
  if (workspace_.num_bytes() < num_bytes) workspace_ = allocate_(num_bytes);  // the old one returns in stream order
  return workspace_.data();
}

float* CudnnConvolutions::weight_scratch(size_t count) {
  if (weight_scratch_.count() < count) weight_scratch_ = allocate_(count * sizeof(float));
  return weight_scratch_.as<float>();
}

float* CudnnConvolutions::padded_scratch(size_t count) {
  if (padded_scratch_.count() < count) padded_scratch_ = allocate_(count * sizeof(float));
  return padded_scratch_.as<float>();
}

const float* CudnnConvolutions::padded_input(const SplitPadding& split, const float* x) {
  if (!split.explicit_padding()) return x;
  float* padded = padded_scratch(split.extra.padded_count());
  kernels::pad_images(stream_, split.extra, x, padded);
  return padded;
}

void CudnnConvolutions::forward(const ConvGeometry& outer, const float* x, const float* w, float* y) {
  if (outer.batch == 0) return;
  const SplitPadding split = split_padding(outer);
  const ConvGeometry& g = split.inner;
  x = padded_input(split, x);
  Plan& p = plan_for(g);
  if (!p.forward) {
    cudnnConvolutionFwdAlgoPerf_t results[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int returned = 0;
    search("forward", g, [&] {
      return cudnnFindConvolutionForwardAlgorithm(handle_, p.x.get(), p.w.get(), p.forward_conv.get(), p.y.get(),
                                                  CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, results);
    });
    choose("forward", g, p.forward_conv.get(), results, returned, false, p.forward);
  }
  const int64_t rsc = g.kernel_h * g.kernel_w * g.in_c;
  float* w_krsc = weight_scratch(static_cast<size_t>(g.weight_count()));
  kernels::transpose(stream_, rsc, g.out_c, w, w_krsc);  // HWIO (rsc, K) -> KRSC (K, rsc)
  void* ws = workspace(p.forward->memory);
  const float one = 1.0f, zero = 0.0f;
  MIRROR_CUDNN_CHECK(cudnnConvolutionForward(handle_, &one, p.x.get(), x, p.w.get(), w_krsc, p.forward_conv.get(),
                                             p.forward->algo, ws, p.forward->memory, &zero, p.y.get(), y));
}

void CudnnConvolutions::backward_weights(const ConvGeometry& outer, const float* x, const float* dy, float* dw) {
  if (outer.batch == 0) return;
  const SplitPadding split = split_padding(outer);
  const ConvGeometry& g = split.inner;
  x = padded_input(split, x);
  Plan& p = plan_for(g);
  if (!p.weights) {
    cudnnConvolutionBwdFilterAlgoPerf_t results[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int returned = 0;
    search("backward-weights", g, [&] {
      return cudnnFindConvolutionBackwardFilterAlgorithm(handle_, p.x.get(), p.y.get(), p.weights_conv.get(),
                                                         p.w.get(), CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                         &returned, results);
    });
    choose("backward-weights", g, p.weights_conv.get(), results, returned, true, p.weights);
  }
  const int64_t rsc = g.kernel_h * g.kernel_w * g.in_c;
  float* dw_krsc = weight_scratch(static_cast<size_t>(g.weight_count()));
  void* ws = workspace(p.weights->memory);
  const float one = 1.0f, zero = 0.0f;
  MIRROR_CUDNN_CHECK(cudnnConvolutionBackwardFilter(handle_, &one, p.x.get(), x, p.y.get(), dy, p.weights_conv.get(),
                                                    p.weights->algo, ws, p.weights->memory, &zero, p.w.get(),
                                                    dw_krsc));
  kernels::transpose(stream_, g.out_c, rsc, dw_krsc, dw);  // KRSC (K, rsc) -> HWIO (rsc, K)
}

void CudnnConvolutions::backward_data(const ConvGeometry& outer, const float* w, const float* dy, float* dx) {
  if (outer.batch == 0) return;
  const SplitPadding split = split_padding(outer);
  const ConvGeometry& g = split.inner;
  // With explicit padding cuDNN writes the gradient of the padded input; the border is cropped off.
  float* dx_inner = split.explicit_padding() ? padded_scratch(split.extra.padded_count()) : dx;
  Plan& p = plan_for(g);
  if (!p.data) {
    cudnnConvolutionBwdDataAlgoPerf_t results[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int returned = 0;
    search("backward-data", g, [&] {
      return cudnnFindConvolutionBackwardDataAlgorithm(handle_, p.w.get(), p.y.get(), p.data_conv.get(), p.x.get(),
                                                       CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &returned, results);
    });
    choose("backward-data", g, p.data_conv.get(), results, returned, true, p.data);
  }
  const int64_t rsc = g.kernel_h * g.kernel_w * g.in_c;
  float* w_krsc = weight_scratch(static_cast<size_t>(g.weight_count()));
  kernels::transpose(stream_, rsc, g.out_c, w, w_krsc);
  void* ws = workspace(p.data->memory);
  const float one = 1.0f, zero = 0.0f;
  MIRROR_CUDNN_CHECK(cudnnConvolutionBackwardData(handle_, &one, p.w.get(), w_krsc, p.y.get(), dy, p.data_conv.get(),
                                                  p.data->algo, ws, p.data->memory, &zero, p.x.get(), dx_inner));
  if (split.explicit_padding()) kernels::crop_images(stream_, split.extra, dx_inner, dx);
}

}  // namespace mirror::cuda
