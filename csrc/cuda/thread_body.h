// What one CUDA thread does: one trajectory (or one log p integration) of one sample,
// running the shared headers' code with the lane type V = float. Everything here is
// __host__ __device__: kernels.cu wraps it in kernels, and emulate.cpp runs the very same
// functions on the CPU for a grid of (block, thread) indices (the emulation harness, tested
// against the CPU kernels in tests/test_cuda_emulation.py). See csrc/cuda/DESIGN.md.
#pragma once
#include <cstddef>
#include <cstdint>

#include "fastscore/likelihood.h"
#include "fastscore/mlp.h"
#include "fastscore/philox.h"
#include "fastscore/sample_path.h"

namespace fastscore {
namespace cuda {

constexpr int kBlock = 128;       // threads per block (one sample each)
constexpr int kMinBlocks = 2;     // occupancy target: 2 blocks per SM, so <= 255 registers
constexpr int kMaxDim = 8;        // per-thread arrays are sized by these
constexpr int kMaxWidth = 256;
constexpr int kMaxEmbed = 64;     // 2 * Fourier frequencies
constexpr int kRows = 4;          // dense() register blocking: 4 adjacent k-major weights
constexpr bool kKMajor = true;    // weights as the CPU kernels hold them (mlp.h weight_index)

// the sample (thread) a (block, thread) index pair works on
FS_HD int64_t thread_sample(int block, int thread, int block_dim) { return (int64_t)block * block_dim + thread; }

// dst <- src (count floats), threads 0..nthreads-1 of a block together: the shared-memory
// staging of the weights, once per block
FS_HD void stage_weights(const float* src, float* dst, size_t count, int thread, int nthreads) {
  for (size_t i = thread; i < count; i += nthreads) dst[i] = src[i];
}

// A launch of the samplers: every step of every sample.
struct SampleArgs {
  MlpLayout L;
  SamplePlan plan;         // program.h; its ops, coef, bias and scale are device pointers
  const float* weights;    // packed, k-major (mlp.h to_k_major), packed_size(L) floats
  int64_t n;
  float* out;  // [n, dim]
  bool stage_shared;  // weights copied to shared memory (else read from global through L1)
};

// W > 0: the network's width is W, known at compile time, so the hidden activations are
// register arrays; W == 0: any width <= kMaxWidth, activations in local memory.
template <int W>
FS_HD MlpLayout fixed_width(MlpLayout L) {
  if (W > 0) L.width = W;
  return L;
}

// out = s_theta(in, t) with time bias c. Out of line (one copy of the unrolled network per
// kernel, not one per sampler call site), with the hidden activations as its own locals so
// that with W > 0 they are registers.
template <int W>
FS_HD_OUTLINE void forward(const MlpLayout& L, const MlpWeights& m, const float* c, float scale, const float* in,
                           float* out) {
  constexpr int WB = W > 0 ? W : kMaxWidth;
  float h[WB], z[WB];
  mlp_forward<kRows, kKMajor>(fixed_width<W>(L), m, c, scale, in, out, h, z);  // W, a constant here
}

// sample_path.h's network policy: time bias and output scale from the plan's tables
template <int W>
struct TableNet {
  const MlpLayout& L;
  MlpWeights m;
  const SamplePlan& p;
  FS_HD void operator()(int64_t row, const float* in, float* out) const {
    forward<W>(L, m, p.bias + row * L.width, p.scale[row], in, out);
  }
};

// sample_path.h's noise policy: this sample's normals (Box–Muller in double, as on the CPU)
struct ThreadDraws {
  uint64_t seed;
  uint32_t index;
  int dim;
  FS_HD void operator()(uint32_t step, uint32_t stream, float* z) const {
    double buf[kMaxDim];
    draw_normals<double>(seed, index, step, stream, dim, buf);
    for (int d = 0; d < dim; ++d) z[d] = (float)buf[d];
  }
};

// Sample i of a launch; `weights` is the staged copy (shared memory) or a.weights.
template <int W>
FS_HD void sample_thread(const SampleArgs& a, const float* weights, int64_t i) {
  const MlpLayout L = fixed_width<W>(a.L);
  const int D = L.dim;
  float regs[kMaxRegisters][kMaxDim];
  float* reg[kMaxRegisters];
  for (int r = 0; r < kMaxRegisters; ++r) reg[r] = regs[r];
  const TableNet<W> net{L, mlp_weights(L, weights), a.plan};
  const ThreadDraws draws{a.plan.seed, (uint32_t)(a.plan.start + i), D};
  sample_path(a.plan, D, net, draws, reg);
  for (int d = 0; d < D; ++d) a.out[i * D + d] = reg[0][d];
}

// A launch of the likelihood: every sample from eps to T.
struct LogProbArgs {
  MlpLayout L;
  SdeParams sde;
  LogProbPlan spec;
  const float* weights;  // packed, k-major
  const float* x;        // [n, dim]
  int64_t n;
  double* logp;  // [n]
  int64_t* nfe;  // [n]
  bool stage_shared;
};

// log p of sample i; returns 1 if its rk45 solve gave up, else 0.
template <int W>
FS_HD int log_prob_thread(const LogProbArgs& a, const float* weights, int64_t i) {
  constexpr int WB = W > 0 ? W : kMaxWidth;
  static_assert(WB >= kMaxDim, "dh, dz hold nt * tangent_stride(L) <= kMaxDim * WB");
  const MlpLayout L = fixed_width<W>(a.L);
  const int D = L.dim, nt = a.spec.hutchinson ? 1 : D;
  float xin[kMaxDim + kMaxEmbed], dirs[kMaxDim * kMaxDim], s[kMaxDim], h[WB], z[WB], dh[kMaxDim * WB],
      dz[kMaxDim * WB], y[kMaxDim + 1], y1[kMaxDim + 1], y5[kMaxDim + 1], comp[1], K[kMaxStages * (kMaxDim + 1)];
  double phi[kMaxEmbed];
  const OdeBuffers<float> b{xin, dirs, s, TangentBuffers<float>{h, z, dh, dz}, y, y1, y5, comp, K, phi};
  for (int d = 0; d < D; ++d) y[d] = a.x[i * D + d];
  if (a.spec.hutchinson)
    draw_rademacher<float>(a.spec.seed, (uint32_t)i, 0, D, dirs);
  else
    unit_directions(D, dirs);
  int64_t nfe;
  const int failed = integrate<kRows, kKMajor>(L, mlp_weights(L, weights), a.sde, a.spec, nt, 1, b, &nfe);
  a.logp[i] = lane_log_prob(a.sde, D, b, 0);
  a.nfe[i] = nfe;
  return failed;
}

}  // namespace cuda
}  // namespace fastscore
