// The machine's FP32 FMA peak, measured: every thread runs independent FMA chains on
// native-width vectors, nothing else, at a few chain counts (kernels.h); the best count's rate
// is the peak that benchmarks quote kernel GFLOP/s against (fastscore/machine.py fma_peak).
// And the bound of a lone sample's network: its matrix-vector rows load a weight per multiply-add.
#include <omp.h>

#include <chrono>
#include <utility>
#include <vector>

#include "kernels.h"
#include "lone_rows.h"

namespace fastscore {
namespace cpu {

namespace {
typedef float Native __attribute__((vector_size(kFmaWidth * sizeof(float))));

// `chains` independent FMA chains per thread on native vectors, nothing else
template <int Chains>
double chains_gflops(int64_t iters, int team) {
  const auto t0 = std::chrono::steady_clock::now();
  int threads = 1;
  float sink = 0.0f;
#pragma omp parallel num_threads(team > 0 ? team : omp_get_max_threads()) reduction(+ : sink)
  {
#pragma omp single
    threads = omp_get_num_threads();
    Native acc[Chains];
    const Native a = Native{} + 0.999999f, b = Native{} + 1e-7f;
    for (int c = 0; c < Chains; ++c) acc[c] = Native{} + (float)(c + omp_get_thread_num());
    for (int64_t i = 0; i < iters; ++i)
      for (int c = 0; c < Chains; ++c) acc[c] = acc[c] * a + b;
    for (int c = 0; c < Chains; ++c) sink += acc[c][0];
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // keep the loop alive: the compiler cannot drop work whose result is observed
  volatile float keep = sink;
  (void)keep;
  return 2.0 * kFmaWidth * Chains * (double)iters * threads / s * 1e-9;
}

template <int... C>
double chains_gflops(int chains, int64_t iters, int team, std::integer_sequence<int, C...>) {
  double r = -1.0;
  ((chains == C ? (void)(r = chains_gflops<C>(iters, team)) : (void)0), ...);
  return r;
}
}  // namespace

double fma_chains_gflops(int chains, int64_t iters, int team) {
  return chains_gflops(chains, iters, team, FmaChainCounts{});
}

double matvec_gflops(int width, int layers, int64_t iters) {
  LineAligned weights((size_t)layers * width * width);  // placed as a network's are (CpuNet)
  float* W = weights.data();
  for (size_t i = 0; i < (size_t)layers * width * width; ++i) W[i] = (float)((i * 2654435761u) % 1000) * 1e-5f;
  std::vector<float> x(width, 1.0f), y(width);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i)
    for (int l = 0; l < layers; ++l) {
      OutputVectors::dense(W + (size_t)l * width * width, nullptr, nullptr, width, width, x.data(), y.data());
      x.swap(y);
    }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile float keep = x[0];
  (void)keep;
  return 2.0 * width * width * layers * (double)iters / s * 1e-9;
}

}  // namespace cpu
}  // namespace fastscore
