// Qualifiers shared by host and device code: every function in include/fastscore/
// is __host__ __device__ under nvcc and plain inline C++ otherwise, so the CPU
// kernels and the CUDA kernels run the same math (ARCHITECTURE section 3).
#pragma once

#if defined(__CUDACC__)
#define FS_HD __host__ __device__ __forceinline__
#else
#define FS_HD inline
#endif
