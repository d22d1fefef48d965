// MIRROR_HD marks a function that both backends run: __host__ __device__ under nvcc, a plain
// function for the host compiler. A header of its own so that headers below the backend
// (random.hpp) can share math with CUDA kernels without including the op table.
#pragma once

#if defined(__CUDACC__)
#define MIRROR_HD __host__ __device__
#else
#define MIRROR_HD
#endif
