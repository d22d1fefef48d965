// Pooling windows clipped to the input, shared privately by the host's max and average pooling:
// padded positions never take part in a window (Keras's "same" pooling), so each op works on the
// part of the window that lies inside the input.
#pragma once

#include <algorithm>
#include <cstdint>

#include "mirror/engine/error.hpp"
#include "mirror/engine/geometry.hpp"

namespace mirror::host {

// The inside part of one output pixel's window: first input row and column, and its extent.
struct PoolWindow {
  int64_t h0 = 0, w0 = 0, rows = 0, cols = 0;
  int64_t count() const { return rows * cols; }
};

inline PoolWindow pool_window(const PoolGeometry& g, int64_t oh, int64_t ow) {
  const int64_t top = oh * g.stride_h - g.pad_top, left = ow * g.stride_w - g.pad_left;
  const int64_t h0 = std::max<int64_t>(top, 0), w0 = std::max<int64_t>(left, 0);
  return {h0, w0, std::min(top + g.pool_h, g.in_h) - h0, std::min(left + g.pool_w, g.in_w) - w0};
}

// Padding smaller than the window on every side keeps every window partly inside the input, so a
// maximum and an average always exist.
inline void check_pool_geometry(const PoolGeometry& g, const char* op) {
  MIRROR_REQUIRE(g.batch >= 0 && g.channels > 0 && g.pool_h > 0 && g.pool_w > 0 && g.stride_h > 0 &&
                     g.stride_w > 0 && g.pad_top >= 0 && g.pad_left >= 0 && g.pad_bottom >= 0 && g.pad_right >= 0 &&
                     g.pad_top < g.pool_h && g.pad_bottom < g.pool_h && g.pad_left < g.pool_w &&
                     g.pad_right < g.pool_w && g.in_h + g.pad_top + g.pad_bottom >= g.pool_h &&
                     g.in_w + g.pad_left + g.pad_right >= g.pool_w,
                 InvalidArgument, "invalid ", op, " geometry: input ", g.in_h, "x", g.in_w, "x", g.channels, ", pool ",
                 g.pool_h, "x", g.pool_w, ", strides ", g.stride_h, "x", g.stride_w, ", padding top/left/bottom/right ",
                 g.pad_top, "/", g.pad_left, "/", g.pad_bottom, "/", g.pad_right,
                 " (the pool must fit in the padded input, and each side's padding must be smaller than the pool)");
}

}  // namespace mirror::host
