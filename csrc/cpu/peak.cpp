// The machine's FP32 FMA peak, measured: every thread runs independent FMA chains on
// native-width vectors (enough chains to cover FMA latency x FMA ports), nothing else.
// Benchmarks quote kernel GFLOP/s as a fraction of this number.
#include <omp.h>

#include <chrono>

#include "kernels.h"

namespace fastscore {
namespace cpu {

namespace {
#if defined(__AVX512F__)
constexpr int kWidth = 16;
#elif defined(__AVX__)
constexpr int kWidth = 8;
#else
constexpr int kWidth = 4;
#endif
typedef float Native __attribute__((vector_size(kWidth * sizeof(float))));
// >= latency (4) x ports (2) with room to spare, and with the two constants within the
// register file: 16 chains spill three of them to memory on AVX2's 16 registers (measured:
// 112-116 GFLOP/s on a Zen 3 whose 12-chain loop gives 198-204)
constexpr int kChains = kWidth == 16 ? 16 : 12;
}  // namespace

double fma_peak_gflops(int64_t iters, int team) {
  const auto t0 = std::chrono::steady_clock::now();
  int threads = 1;
  float sink = 0.0f;
#pragma omp parallel num_threads(team > 0 ? team : omp_get_max_threads()) reduction(+ : sink)
  {
#pragma omp single
    threads = omp_get_num_threads();
    Native acc[kChains];
    const Native a = Native{} + 0.999999f, b = Native{} + 1e-7f;
    for (int c = 0; c < kChains; ++c) acc[c] = Native{} + (float)(c + omp_get_thread_num());
    for (int64_t i = 0; i < iters; ++i)
      for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * a + b;
    for (int c = 0; c < kChains; ++c) sink += acc[c][0];
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // keep the loop alive: the compiler cannot drop work whose result is observed
  volatile float keep = sink;
  (void)keep;
  return 2.0 * kWidth * kChains * (double)iters * threads / s * 1e-9;
}

}  // namespace cpu
}  // namespace fastscore
