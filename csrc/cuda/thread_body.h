// What one CUDA thread does: one trajectory (or one log p integration) of one sample,
// running the shared headers' code with the lane type V = float. Everything here is
// __host__ __device__: kernels.cu wraps it in kernels, and emulate.cpp runs the very same
// functions on the CPU for a grid of (block, thread) indices (the emulation harness, tested
// against the CPU kernels in tests/test_cuda_emulation.py). See csrc/cuda/DESIGN.md.
#pragma once
#include <cstddef>
#include <cstdint>

#include "fastscore/adaptive_sample.h"
#include "fastscore/likelihood.h"
#include "fastscore/net.h"
#include "fastscore/philox.h"
#include "fastscore/sample_path.h"

namespace fastscore {
namespace cuda {

constexpr int kBlock = 128;       // threads per block (one sample each)
constexpr int kMinBlocks = 2;     // occupancy target: 2 blocks per SM, so <= 255 registers
constexpr int kMaxDim = 8;        // per-thread arrays are sized by these
constexpr int kMaxArena = 1024;   // lane arena (floats; the tangents take kMaxDim times that)
constexpr int kMaxTimeArena = 512;  // time and cond arenas (doubles)
constexpr int kRows = 4;          // dense() register blocking: 4 adjacent k-major weights
constexpr bool kKMajor = true;    // weights as the CPU kernels hold them (net.h weight_index)
using ThreadRows = RowBlocks<kRows, kKMajor>;

// the sample (thread) a (block, thread) index pair works on
FS_HD int64_t thread_sample(int block, int thread, int block_dim) { return (int64_t)block * block_dim + thread; }

// dst <- src (count floats), threads 0..nthreads-1 of a block together: the shared-memory
// staging of the weights, once per block
FS_HD void stage_weights(const float* src, float* dst, size_t count, int thread, int nthreads) {
  for (size_t i = thread; i < count; i += nthreads) dst[i] = src[i];
}

// A launch of the samplers: every step of every sample.
struct SampleArgs {
  Net net;                 // its ops and params (k-major) are device pointers
  size_t n_params;
  SamplePlan plan;         // program.h; its ops, coef and time table are device pointers
  const double* cond;      // [n, cond_dim] or null
  int64_t n;
  float* out;  // [n, dim]
  bool stage_shared;  // params copied to shared memory (else read from global through L1)
};

// the cond imports of sample i into the lane arena a (ca: double scratch)
FS_HD void import_cond(const Net& net, const double* cond, int64_t i, double* ca, float* a) {
  const NetLayout& L = net.L;
  if (L.cond_dim == 0) return;
  import_cond_lane<kKMajor>(net, cond + i * L.cond_dim, ca, a, 0);
}

// Sample i of a launch; `params` is the staged copy (shared memory) or the global one.
FS_HD void sample_thread(const SampleArgs& s, const float* params, int64_t i) {
  const Net net{s.net.L, s.net.ops, params};
  const int D = net.L.dim;
  float regs[kMaxRegisters][kMaxDim], a[kMaxArena];
  double ca[kMaxTimeArena];
  float* reg[kMaxRegisters];
  for (int r = 0; r < kMaxRegisters; ++r) reg[r] = regs[r];
  import_cond(net, s.cond, i, ca, a);
  const LoneNet<ThreadRows> tn{net, s.plan, a};
  const LoneDraws draws{s.plan.seed, (uint32_t)(s.plan.start + i), D};
  sample_path(s.plan, D, tn, draws, reg);
  for (int d = 0; d < D; ++d) s.out[i * D + d] = reg[0][d];
}

// A launch of the likelihood: every sample from eps to T.
struct LogProbArgs {
  Net net;
  size_t n_params;
  SdeParams sde;
  LogProbPlan spec;
  const float* x;        // [n, dim]
  const double* cond;    // [n, cond_dim] or null
  int64_t n;
  double* logp;  // [n]
  int64_t* nfe;  // [n]
  bool stage_shared;
};

// log p of sample i; returns 1 if its rk45 solve gave up, else 0.
FS_HD int log_prob_thread(const LogProbArgs& s, const float* params, int64_t i) {
  const Net net{s.net.L, s.net.ops, params};
  const int D = net.L.dim;
  float a[kMaxArena], dT[kMaxDim * kMaxArena], dirs[kMaxDim * kMaxDim], sc[kMaxDim], y[kMaxDim + 1], y1[kMaxDim + 1],
      y5[kMaxDim + 1], comp[1], K[kMaxStages * (kMaxDim + 1)];
  double ta[kMaxTimeArena];
  const OdeBuffers<float> b{a, dT, dirs, sc, y, y1, y5, comp, K, ta};
  import_cond(net, s.cond, i, ta, a);  // ta is free until the first time phase
  return log_prob_one<ThreadRows>(net, s.sde, s.spec, s.x + i * D, i, b, s.logp + i, s.nfe + i);
}

// A launch of the per-sample adaptive samplers (adaptive_sample.h): every sample from T to eps.
struct AdaptiveArgs {
  Net net;
  size_t n_params;
  AdaptivePlan plan;
  const double* cond;  // [n, cond_dim] or null
  int64_t n;
  float* out;                          // [n, dim]
  int64_t *nfe, *accepted, *rejected;  // [n]
  bool stage_shared;
};

// sample i of an adaptive launch, as one lane of the CPU tile; returns 1 if its solve gave up
FS_HD int adaptive_thread(const AdaptiveArgs& s, const float* params, int64_t i) {
  const Net net{s.net.L, s.net.ops, params};
  const int D = net.L.dim;
  // no tangents (the samplers evaluate the score alone), so no dT or directions
  float a[kMaxArena], sc[kMaxDim], y[kMaxDim + 1], y1[kMaxDim + 1], y5[kMaxDim + 1], comp[1],
      K[kMaxStages * (kMaxDim + 1)];
  double ta[kMaxTimeArena], wt[ggf_scratch(1, kMaxDim)];
  const OdeBuffers<float> b{a, nullptr, nullptr, sc, y, y1, y5, comp, K, ta};
  import_cond(net, s.cond, i, ta, a);
  const int failed = adaptive_sample_one<ThreadRows>(net, s.plan, (uint32_t)(s.plan.start + i), b, wt, s.nfe + i,
                                                     s.accepted + i, s.rejected + i);
  for (int d = 0; d < D; ++d) s.out[i * D + d] = y[d];
  return failed;
}

}  // namespace cuda
}  // namespace fastscore
