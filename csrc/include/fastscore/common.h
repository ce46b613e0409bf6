// Qualifiers shared by host and device code: every function in include/fastscore/
// is __host__ __device__ under nvcc and plain inline C++ otherwise, so the CPU
// kernels and the CUDA kernels run the same math (ARCHITECTURE section 3).
#pragma once

#if defined(__CUDACC__)
#define FS_HD __host__ __device__ __forceinline__
#else
#define FS_HD inline
#endif

// Full unrolling where nvcc knows the trip count (a width fixed by a template parameter),
// so per-thread arrays indexed by the loop counter live in registers. GCC does its own.
#if defined(__CUDA_ARCH__)
#define FS_UNROLL _Pragma("unroll")
#else
#define FS_UNROLL
#endif
