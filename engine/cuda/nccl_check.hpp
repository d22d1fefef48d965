// Status check for NCCL: records the expression, file:line and NCCL's error text (plus its last
// detailed message), and throws CollectiveError.
#pragma once

#include <nccl.h>

#include "mirror/engine/error.hpp"

namespace mirror::cuda {

[[noreturn]] inline void throw_nccl_error(ncclResult_t status, const char* expr, const char* file, int line,
                                          ncclComm_t comm = nullptr) {
  const char* detail = ncclGetLastError(comm);
  throw CollectiveError(str("NCCL error ", ncclGetErrorString(status), " (", static_cast<int>(status), ") in ", expr,
                            " at ", file, ":", line, (detail && *detail) ? ": " : "", detail ? detail : ""));
}

}  // namespace mirror::cuda

#define MIRROR_NCCL_CHECK(expr)                                                                   \
  do {                                                                                            \
    const ncclResult_t mirror_status_ = (expr);                                                   \
    if (mirror_status_ != ncclSuccess) ::mirror::cuda::throw_nccl_error(mirror_status_, #expr, __FILE__, __LINE__); \
  } while (0)
