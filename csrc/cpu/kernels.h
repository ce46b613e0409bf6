// Fused CPU kernels: whole trajectories per tile of samples, OpenMP over tiles.
// Every function takes raw buffers (shapes in comments) and is called without the GIL.
#pragma once
#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "fastscore/adaptive_sample.h"
#include "fastscore/net.h"
#include "fastscore/ode.h"
#include "fastscore/program.h"
#include "fastscore/sde.h"

namespace fastscore {
namespace cpu {

// n floats that start on a cache line: a lone sample's vector loads of a weight row
// (lone_rows.h) then never straddle two lines where the rows' offsets are multiples of 16 floats
class LineAligned {
 public:
  explicit LineAligned(size_t n) : buf_(n + kLine / sizeof(float)) {}
  float* data() { return (float*)(((uintptr_t)buf_.data() + kLine - 1) & ~(uintptr_t)(kLine - 1)); }

 private:
  static constexpr size_t kLine = 64;
  std::vector<float> buf_;
};

// The CPU kernels' copy of a network, made once per call (or once per prepared sampler):
// every dense row's weights k-major (net.h weight_index), so a dense step's broadcasts share
// one base pointer. Its rows stay the packed network's: they must outlive it.
struct CpuNet {
  CpuNet(const Net& packed, size_t n_params) : buf(n_params) {
    to_k_major(packed.L, packed.ops, packed.params, buf.data(), n_params);
    net = Net{packed.L, packed.ops, buf.data()};
  }
  LineAligned buf;
  Net net;
};

// largest data dimension the CPU kernels take (per-lane stack buffers are sized by it)
constexpr int kMaxDim = 64;

// Every entry takes the network (net.h: layout, rows, float32 parameters of n_params) and,
// for a conditional network, cond [n, cond_dim] (float64, one row per sample; else null).

// s_theta(x, t) for x [n, dim] at one time t -> out [n, dim] (the tiled forward pass alone)
void net_eval(const Net& net, size_t n_params, const float* x, const double* cond, int64_t n, double t, float* out);

// n samples by the plan's step program from the prior at T down to eps, on a network staged
// as CpuNet does. Sample j of the output is sample index p.start + j of the random stream.
// out [n, dim]
void sample(const Net& staged, const SamplePlan& p, const double* cond, int64_t n, float* out);

// s_theta(x, t) [n, dim] and tr ds/dx [n] (exact, or Hutchinson's with the probes of
// `seed`) by forward-mode tangents: the likelihood kernel's evaluation alone
void score_trace(const Net& net, size_t n_params, const float* x, const double* cond, int64_t n, double t,
                 bool hutchinson, uint64_t seed, float* s, float* tr);

// log p_eps(x) [n] in nats by the augmented probability-flow ODE (ode.h), with the exact
// trace or Hutchinson's; nfe [n] network evaluations per sample. x [n, dim]. Returns the
// number of samples whose rk45 solve gave up.
int64_t log_prob(const Net& net, size_t n_params, const SdeParams& sde, const LogProbPlan& spec, const float* x,
                 const double* cond, int64_t n, double* logp, int64_t* nfe);

// n samples by a per-sample adaptive solve from the prior at T down to eps (adaptive_sample.h):
// the Dormand–Prince controller of the plan on the probability flow, or (brownian) Gotta Go
// Fast on the reverse SDE with each sample's Brownian tree; then Tweedie's step if denoise.
// Sample j is stream index start + j. out [n, dim]; nfe, accepted, rejected [n]. Returns the
// number of samples that gave up (too many attempts).
int64_t sample_adaptive(const Net& net, size_t n_params, const AdaptivePlan& plan, const double* cond, int64_t n,
                        float* out, int64_t* nfe, int64_t* accepted, int64_t* rejected);

int max_threads();

// The FMA peak probe's vectors (native width) and the chain counts it tries: from FMA latency
// x pipes (4 x 2 on the x86 cores of today: 8) up to what the register file holds beside the
// probe's two constants (AVX-512: 32 registers, AVX2 and SSE: 16; more would spill chains to
// memory and measure the spills: 16 chains on AVX2 read 112-116 GFLOP/s on a Zen 3 whose
// 12-chain loop gives 198-204).
#if defined(__AVX512F__)
constexpr int kFmaWidth = 16, kVectorRegisters = 32;
using FmaChainCounts = std::integer_sequence<int, 8, 12, 16, 24, 30>;
#elif defined(__AVX__)
constexpr int kFmaWidth = 8, kVectorRegisters = 16;
using FmaChainCounts = std::integer_sequence<int, 8, 10, 12, 14>;
#else
constexpr int kFmaWidth = 4, kVectorRegisters = 16;
using FmaChainCounts = std::integer_sequence<int, 8, 10, 12, 14>;
#endif
template <int... C>
constexpr std::array<int, sizeof...(C)> chain_array(std::integer_sequence<int, C...>) {
  return {C...};
}
constexpr auto fma_chain_counts() { return chain_array(FmaChainCounts{}); }

// FP32 FMA throughput of `team` threads (0: all) running `chains` chains (one of the counts
// above; else -1), GFLOP/s; iters FMA rounds per chain. The machine's peak is the best count's
// (fastscore/machine.py fma_peak).
double fma_chains_gflops(int chains, int64_t iters, int team);

// one thread's rate through `layers` square k-major dense rows of `width` as a lone sample runs
// them (lone_rows.h), GFLOP/s: the bound of a one-sample call, whose every multiply-add loads
// its own weight (from L1 if layers x width^2 floats fit there, else from L2)
double matvec_gflops(int width, int layers, int64_t iters);

}  // namespace cpu
}  // namespace fastscore
