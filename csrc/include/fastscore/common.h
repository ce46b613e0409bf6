// Qualifiers shared by host and device code: every function in include/fastscore/
// is __host__ __device__ under nvcc and plain inline C++ otherwise, so the CPU
// kernels and the CUDA kernels run the same math (ARCHITECTURE section 3).
#pragma once

#if defined(__CUDACC__)
#define FS_HD __host__ __device__ __forceinline__
// a large body called from several places: one out-of-line copy on the GPU instead of one
// per call site (compile time, instruction cache); the CPU compiler decides as usual
#define FS_HD_OUTLINE __host__ __device__ __noinline__
#else
#define FS_HD inline
#define FS_HD_OUTLINE inline
#endif

// Full unrolling where nvcc knows the trip count (a width fixed by a template parameter),
// so per-thread arrays indexed by the loop counter live in registers. GCC does its own.
#if defined(__CUDA_ARCH__)
#define FS_UNROLL _Pragma("unroll")
#else
#define FS_UNROLL
#endif
