// The host's convolution fused with the 2x2 max pooling after it (Conv2D with ReLU or no
// activation, stride 1, then MaxPooling2D((2, 2))). Forward computes each pooled output from its
// four convolution outputs in registers and keeps one byte saying which won, so the convolution's
// output (four times the pooled tensor) is never written or read back; backward takes the pooled
// gradient and those bytes straight to the kernel's and bias's gradients. Both passes run along
// the output channels, 8 at a time, in GCC's vector types (one AVX2 register; two SSE ones in the
// baseline variant), over images split across the threads. Padding ("same") is handled by copying
// each image into a zero-bordered scratch image first.
#include <algorithm>
#include <cstring>

#include "mirror/engine/host/host_backend_impl.hpp"

// The vector helpers below take and return GCC vectors; GCC warns that their ABI differs with and
// without AVX, which matters only for calls between translation units: these are file-local and
// always inlined.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace mirror::host {
namespace {

typedef float F8 __attribute__((vector_size(32)));
typedef int32_t I8 __attribute__((vector_size(32)));
typedef uint8_t U8x8 __attribute__((vector_size(8)));

constexpr int64_t kLanes = 8;
constexpr uint8_t kNone = Backend::kArgmaxNone;

[[gnu::always_inline]] inline F8 load(const float* p) {
  F8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
[[gnu::always_inline]] inline void store(float* p, const F8& v) { std::memcpy(p, &v, sizeof v); }
// Lanes of `a` where mask is all ones, else of `b` (bitwise, so no lane is computed twice).
[[gnu::always_inline]] inline F8 select(const I8& mask, const F8& a, const F8& b) {
  return reinterpret_cast<F8>((mask & reinterpret_cast<I8>(a)) | (~mask & reinterpret_cast<I8>(b)));
}

// The low byte of each lane, stored as 8 consecutive bytes.
typedef uint8_t U8x32 __attribute__((vector_size(32)));
[[gnu::always_inline]] inline void store_bytes(uint8_t* p, const I8& v) {
  const U8x32 bytes = reinterpret_cast<U8x32>(v);
  const U8x8 low = __builtin_shufflevector(bytes, bytes, 0, 4, 8, 12, 16, 20, 24, 28);
  std::memcpy(p, &low, sizeof low);
}

// One image's view for the kernels: the input already padded, so the convolution is "valid".
struct ImageShape {
  int64_t in_h, in_w, in_c, out_c, kernel_h, kernel_w;
  int64_t pooled_h, pooled_w;  // the pooling's output: floor(convolution output / 2)
};

// The template arguments fix the kernel's size and input channels when they are known (0: taken
// from the shape at run time), so the reference model's 3x3x1 kernel keeps its 9 weight vectors
// and 9 gradient sums in registers.
template <int kKh, int kKw, int kIc>
struct Taps {
  const ImageShape& s;
  int64_t kh() const { return kKh ? kKh : s.kernel_h; }
  int64_t kw() const { return kKw ? kKw : s.kernel_w; }
  int64_t ic() const { return kIc ? kIc : s.in_c; }
  // The taps (kernel_h * kernel_w * in_c) when all three are fixed, else 0.
  static constexpr int64_t kFixedTaps = kKh && kKw && kIc ? int64_t{kKh} * kKw * kIc : 0;
};

// The convolution outputs of kPixels horizontally adjacent windows for one block of channels,
// four per window in row-major order: a[4p + 0..3] = (2ph, 2pw), (2ph, 2pw+1), (2ph+1, 2pw),
// (2ph+1, 2pw+1) of window p. Two windows at a time give eight independent sums, enough to hide
// the latency of the additions.
template <int kKh, int kKw, int kIc, int kPixels>
[[gnu::always_inline]] inline void window_outputs(const Taps<kKh, kKw, kIc>& t, const float* __restrict corner,
                                                  const F8* __restrict cached, const float* __restrict w,
                                                  const F8& bias, F8 (&a)[4 * kPixels]) {
  const int64_t kh = t.kh(), kw = t.kw(), ic = t.ic(), out_c = t.s.out_c;
  const int64_t pixel = ic, row = t.s.in_w * ic;  // floats between neighbouring input pixels
  for (int k = 0; k < 4 * kPixels; ++k) a[k] = bias;
  for (int64_t i = 0; i < kh; ++i)
    for (int64_t j = 0; j < kw; ++j)
      for (int64_t ci = 0; ci < ic; ++ci) {
        const int64_t k = (i * kw + j) * ic + ci;
        F8 wv;
        if constexpr (Taps<kKh, kKw, kIc>::kFixedTaps > 0) {
          wv = cached[k];
        } else {
          wv = load(w + k * out_c);
        }
        for (int px = 0; px < kPixels; ++px) {
          const float* p = corner + (2 * px + j) * pixel + i * row + ci;
          // (A vector times a scalar: the scalar is broadcast.)
          a[4 * px + 0] += wv * p[0];
          a[4 * px + 1] += wv * p[pixel];
          a[4 * px + 2] += wv * p[row];
          a[4 * px + 3] += wv * p[row + pixel];
        }
      }
}

// One window's maximum and which of its four outputs was the first to reach it (ew::becomes_max,
// as in max_pool_backward: the first maximum, or the first NaN, which stays); with ReLU,
// relu(max) = max(relu), NaN stays NaN, and a window whose maximum is not positive passes no gradient.
[[gnu::always_inline]] inline void pool_window(const F8* a, bool relu, float* __restrict y, uint8_t* __restrict argmax) {
  F8 best = a[0];
  I8 code = I8{};
  for (int32_t k = 1; k < 4; ++k) {
    const I8 greater = ~(a[k] <= best) & (best == best);  // ew::becomes_max
    best = select(greater, a[k], best);
    code = (greater & k) | (~greater & code);
  }
  if (relu) {
    const I8 dead = best <= F8{};
    best = select(dead, F8{}, best);
    code = (dead & kNone) | (~dead & code);
  }
  store(y, best);
  store_bytes(argmax, code);
}

// Forward of one image: y, argmax (pooled_h, pooled_w, out_c).
template <int kKh, int kKw, int kIc>
[[gnu::always_inline]] inline void forward_image(const ImageShape& s, bool relu, const float* __restrict x,
                                                 const float* __restrict w, const float* __restrict b,
                                                 float* __restrict y, uint8_t* __restrict argmax) {
  const Taps<kKh, kKw, kIc> t{s};
  const int64_t ic = t.ic();
  constexpr int64_t kFixedTaps = Taps<kKh, kKw, kIc>::kFixedTaps;
  for (int64_t c0 = 0; c0 < s.out_c; c0 += kLanes) {
    const F8 bias = b ? load(b + c0) : F8{};
    // With the taps known the block's weights are loaded once per image, not per window.
    F8 cached[kFixedTaps > 0 ? kFixedTaps : 1];
    if constexpr (kFixedTaps > 0)
      for (int64_t k = 0; k < kFixedTaps; ++k) cached[k] = load(w + k * s.out_c + c0);
    for (int64_t ph = 0; ph < s.pooled_h; ++ph) {
      const float* corner_row = x + 2 * ph * s.in_w * ic;
      const int64_t out_row = ph * s.pooled_w * s.out_c + c0;
      int64_t pw = 0;
      for (; pw + 2 <= s.pooled_w; pw += 2) {
        F8 a[8];
        window_outputs<kKh, kKw, kIc, 2>(t, corner_row + 2 * pw * ic, cached, w + c0, bias, a);
        pool_window(a, relu, y + out_row + pw * s.out_c, argmax + out_row + pw * s.out_c);
        pool_window(a + 4, relu, y + out_row + (pw + 1) * s.out_c, argmax + out_row + (pw + 1) * s.out_c);
      }
      if (pw < s.pooled_w) {
        F8 a[4];
        window_outputs<kKh, kKw, kIc, 1>(t, corner_row + 2 * pw * ic, cached, w + c0, bias, a);
        pool_window(a, relu, y + out_row + pw * s.out_c, argmax + out_row + pw * s.out_c);
      }
    }
  }
}

// Backward of one image, added into dw_sum (kernel_h, kernel_w, in_c, out_c) and db_sum (out_c).
template <int kKh, int kKw, int kIc>
[[gnu::always_inline]] inline void backward_image(const ImageShape& s, const float* __restrict x,
                                                  const float* __restrict dy, const uint8_t* __restrict argmax,
                                                  float* __restrict dw_sum, float* __restrict db_sum) {
  const Taps<kKh, kKw, kIc> t{s};
  const int64_t kh = t.kh(), kw = t.kw(), ic = t.ic();
  const int64_t pixel = ic, row = s.in_w * ic;
  constexpr int64_t kFixedTaps = Taps<kKh, kKw, kIc>::kFixedTaps;
  for (int64_t c0 = 0; c0 < s.out_c; c0 += kLanes) {
    // With the taps known the sums live in registers for the whole image; otherwise in dw_sum.
    F8 sums[kFixedTaps > 0 ? kFixedTaps : 1];
    if constexpr (kFixedTaps > 0)
      for (int64_t k = 0; k < kFixedTaps; ++k) sums[k] = load(dw_sum + k * s.out_c + c0);
    for (int64_t ph = 0; ph < s.pooled_h; ++ph) {
      for (int64_t pw = 0; pw < s.pooled_w; ++pw) {
        const int64_t at = (ph * s.pooled_w + pw) * s.out_c + c0;
        const F8 g = load(dy + at);
        U8x8 bytes;
        std::memcpy(&bytes, argmax + at, sizeof bytes);
        const I8 code = __builtin_convertvector(bytes, I8);
        const F8 g0 = select(code == 0, g, F8{}), g1 = select(code == 1, g, F8{});
        const F8 g2 = select(code == 2, g, F8{}), g3 = select(code == 3, g, F8{});
        // The bias's sum stays in memory: one more register would spill the kernel's sums.
        store(db_sum + c0, load(db_sum + c0) + select(code != kNone, g, F8{}));
        const float* corner = x + (2 * ph * s.in_w + 2 * pw) * ic;
        int64_t k = 0;
        for (int64_t i = 0; i < kh; ++i)
          for (int64_t j = 0; j < kw; ++j)
            for (int64_t ci = 0; ci < ic; ++ci, ++k) {
              const float* p = corner + i * row + j * pixel + ci;
              const F8 term = (g0 * p[0] + g1 * p[pixel]) + (g2 * p[row] + g3 * p[row + pixel]);
              if constexpr (kFixedTaps > 0) {
                sums[k] += term;
              } else {
                float* sum = dw_sum + k * s.out_c + c0;
                store(sum, load(sum) + term);
              }
            }
      }
    }
    if constexpr (kFixedTaps > 0)
      for (int64_t k = 0; k < kFixedTaps; ++k) store(dw_sum + k * s.out_c + c0, sums[k]);
  }
}

// x's image n, or its copy with the convolution's zero padding around it in `padded`.
const float* image_input(const ConvGeometry& g, const float* x, int64_t n, float* padded) {
  const int64_t image = g.in_h * g.in_w * g.in_c;
  if (!g.padded()) return x + n * image;
  const int64_t width = g.in_w + g.pad_left + g.pad_right, height = g.in_h + g.pad_top + g.pad_bottom;
  std::fill(padded, padded + height * width * g.in_c, 0.0f);
  for (int64_t r = 0; r < g.in_h; ++r)
    std::copy(x + n * image + r * g.in_w * g.in_c, x + n * image + (r + 1) * g.in_w * g.in_c,
              padded + ((r + g.pad_top) * width + g.pad_left) * g.in_c);
  return padded;
}

ImageShape image_shape(const ConvGeometry& g) {
  return {g.in_h + g.pad_top + g.pad_bottom, g.in_w + g.pad_left + g.pad_right, g.in_c, g.out_c, g.kernel_h,
          g.kernel_w, g.out_h() / 2, g.out_w() / 2};
}

// Images [begin, end), the kernel's shape fixed by the template arguments.
template <int kKh, int kKw, int kIc>
[[gnu::always_inline]] inline void forward_images(const ConvGeometry& g, bool relu, const float* x, const float* w, const float* b,
                                    float* y, uint8_t* argmax, int64_t begin, int64_t end, float* padded) {
  const ImageShape s = image_shape(g);
  const int64_t pooled = s.pooled_h * s.pooled_w * s.out_c;
  for (int64_t n = begin; n < end; ++n)
    forward_image<kKh, kKw, kIc>(s, relu, image_input(g, x, n, padded), w, b, y + n * pooled, argmax + n * pooled);
}

template <int kKh, int kKw, int kIc>
[[gnu::always_inline]] inline void backward_images(const ConvGeometry& g, const float* x, const float* dy, const uint8_t* argmax,
                                     int64_t begin, int64_t end, float* padded, float* dw_sum, float* db_sum) {
  const ImageShape s = image_shape(g);
  const int64_t pooled = s.pooled_h * s.pooled_w * s.out_c;
  for (int64_t n = begin; n < end; ++n)
    backward_image<kKh, kKw, kIc>(s, image_input(g, x, n, padded), dy + n * pooled, argmax + n * pooled, dw_sum,
                                  db_sum);
}

// The kernel's shape as template arguments (0: known only at run time).
template <int kKh, int kKw, int kIc>
struct KernelShape {};

// Runs images(KernelShape<...>{}) as a hot_loop (cpu_isa.hpp), instantiated for g's kernel: the
// reference model's 3x3 on one channel, 3x3 on any, any.
template <class Fn>
void run_images(const ConvGeometry& g, const Fn& images) {
  if (g.kernel_h == 3 && g.kernel_w == 3 && g.in_c == 1)
    return hot_loop([&]() MIRROR_ALWAYS_INLINE { images(KernelShape<3, 3, 1>{}); });
  if (g.kernel_h == 3 && g.kernel_w == 3) return hot_loop([&]() MIRROR_ALWAYS_INLINE { images(KernelShape<3, 3, 0>{}); });
  hot_loop([&]() MIRROR_ALWAYS_INLINE { images(KernelShape<0, 0, 0>{}); });
}

// The gradient of image n's convolution output, rebuilt from the pooled gradient: dy where a
// window's winner was, zero elsewhere (the input gradient is then oneDNN's backward-data over it).
void unpool_gradient(const ConvGeometry& g, int64_t n, const float* dy, const uint8_t* argmax, float* dconv) {
  const int64_t out_h = g.out_h(), out_w = g.out_w(), c = g.out_c, pooled_h = out_h / 2, pooled_w = out_w / 2;
  float* image = dconv + n * out_h * out_w * c;
  std::fill(image, image + out_h * out_w * c, 0.0f);
  for (int64_t ph = 0; ph < pooled_h; ++ph)
    for (int64_t pw = 0; pw < pooled_w; ++pw) {
      const int64_t at = ((n * pooled_h + ph) * pooled_w + pw) * c;
      for (int64_t k = 0; k < c; ++k) {
        const uint8_t code = argmax[at + k];
        if (code != kNone) image[((2 * ph + code / 2) * out_w + 2 * pw + code % 2) * c + k] = dy[at + k];
      }
    }
}

}  // namespace

bool HostBackend::fuses_conv2d_max_pool(const ConvGeometry& conv, const PoolGeometry& pool) const {
  return conv.stride_h == 1 && conv.stride_w == 1 && conv.out_c % kLanes == 0 && conv.in_c > 0 &&
         conv.kernel_h > 0 && conv.kernel_w > 0 && conv.out_h() >= 2 && conv.out_w() >= 2 && pool.pool_h == 2 &&
         pool.pool_w == 2 && pool.stride_h == 2 && pool.stride_w == 2 && !pool.padded() &&
         pool.in_h == conv.out_h() && pool.in_w == conv.out_w() && pool.channels == conv.out_c;
}

void HostBackend::check_conv_pool(const ConvGeometry& conv, const PoolGeometry& pool) const {
  MIRROR_REQUIRE(conv.batch == pool.batch && fuses_conv2d_max_pool(conv, pool), InvalidArgument,
                 "the host fuses a convolution with the max pooling after it only for stride 1, a multiple of ",
                 kLanes, " filters and 2x2 pooling with strides 2 and no padding over the convolution's whole "
                 "output (batch ", conv.batch, " and ", pool.batch, ")");
}

float* HostBackend::conv_pool_scratch(int64_t chunks, size_t per_chunk) {
  const size_t count = static_cast<size_t>(chunks) * per_chunk;
  if (conv_pool_scratch_.size() < count) conv_pool_scratch_.resize(count);
  return conv_pool_scratch_.data();
}

void HostBackend::conv2d_max_pool_forward(const ConvGeometry& g, const PoolGeometry& pool, bool relu, const float* x,
                                          const float* w, const float* b, float* y, uint8_t* argmax) {
  check_conv_pool(g, pool);
  if (g.batch == 0) return;
  const int64_t chunks = std::min<int64_t>(threads_, g.batch);
  const ImageShape s = image_shape(g);
  const size_t per_chunk = g.padded() ? static_cast<size_t>(s.in_h * s.in_w * s.in_c) : 0;
  float* scratch = conv_pool_scratch(chunks, per_chunk);
#pragma omp parallel for num_threads(threads_) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = g.batch * c / chunks, end = g.batch * (c + 1) / chunks;
    float* padded = scratch + static_cast<size_t>(c) * per_chunk;
    run_images(g, [&]<int kKh, int kKw, int kIc>(KernelShape<kKh, kKw, kIc>) MIRROR_ALWAYS_INLINE {
      forward_images<kKh, kKw, kIc>(g, relu, x, w, b, y, argmax, begin, end, padded);
    });
  }
}

void HostBackend::conv2d_max_pool_backward(const ConvGeometry& g, const PoolGeometry& pool, const float* x,
                                           const float* w, const float* dy, const uint8_t* argmax, float* dw,
                                           float* db, float* dx) {
  check_conv_pool(g, pool);
  const int64_t weights = g.weight_count();
  // Each chunk of images sums into its own dw and db, then the chunks are added in order: the
  // same bits on every run with the same thread count.
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(threads_, g.batch));
  const ImageShape s = image_shape(g);
  const size_t padded_floats = g.padded() ? static_cast<size_t>(s.in_h * s.in_w * s.in_c) : 0;
  const size_t sum_floats = static_cast<size_t>(weights + g.out_c);
  const size_t per_chunk = padded_floats + sum_floats;
  float* scratch = conv_pool_scratch(chunks, per_chunk);
#pragma omp parallel for num_threads(threads_) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = g.batch * c / chunks, end = g.batch * (c + 1) / chunks;
    float* padded = scratch + static_cast<size_t>(c) * per_chunk;
    float* dw_sum = padded + padded_floats;
    float* db_sum = dw_sum + weights;
    std::fill(dw_sum, dw_sum + sum_floats, 0.0f);
    run_images(g, [&]<int kKh, int kKw, int kIc>(KernelShape<kKh, kKw, kIc>) MIRROR_ALWAYS_INLINE {
      backward_images<kKh, kKw, kIc>(g, x, dy, argmax, begin, end, padded, dw_sum, db_sum);
    });
  }
  for (int64_t k = 0; k < weights + g.out_c; ++k) {
    float sum = scratch[padded_floats + static_cast<size_t>(k)];
    for (int64_t c = 1; c < chunks; ++c) sum += scratch[static_cast<size_t>(c) * per_chunk + padded_floats + static_cast<size_t>(k)];
    if (k < weights) {
      dw[k] = sum;
    } else if (db) {
      db[k - weights] = sum;
    }
  }
  if (dx && g.batch > 0) {
    const size_t conv_floats = static_cast<size_t>(g.batch * g.out_h() * g.out_w() * g.out_c);
    if (conv_pool_gradient_.size() < conv_floats) conv_pool_gradient_.resize(conv_floats);
    float* dconv = conv_pool_gradient_.data();
#pragma omp parallel for num_threads(threads_) if (chunks > 1)
    for (int64_t n = 0; n < g.batch; ++n) unpool_gradient(g, n, dy, argmax, dconv);
    conv2d_backward_data(g, w, dconv, dx);
  }
}

}  // namespace mirror::host
