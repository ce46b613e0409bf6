// Host-side planning of the CUDA launches, shared by kernels.cu (real launches) and
// emulate.cpp (the same launches run on the CPU): the k-major weights, the sampler's chunks
// of steps with their time-bias tables, and the choice of kernel instantiation by width.
#pragma once
#include <algorithm>
#include <type_traits>
#include <vector>

#include "thread_body.h"

namespace fastscore {
namespace gpu {

// the weights as the kernels read them (the CPU kernels' k-major copy)
inline std::vector<float> k_major_weights(const MlpLayout& L, const float* packed) {
  std::vector<float> w(packed_size(L));
  to_k_major(L, packed, w.data());
  return w;
}

// table [bias_rows(k0, k1), width]: the first layer's time bias at every evaluation time of
// steps k0 .. k1 - 1 (thread_body.h, TableNet), from the k-major weights
inline std::vector<float> bias_table(const MlpLayout& L, const float* k_major, const SdeParams& sde,
                                     const SampleSpec& p, int k0, int k1) {
  const MlpWeights m = mlp_weights(L, k_major);
  std::vector<float> table((size_t)bias_rows(k0, k1) * L.width);
  std::vector<double> phi(embed_dim(L));
  for (int row = 0; row < bias_rows(k0, k1); ++row) {
    const int k = row / 2 + k0;  // the last row: k == k1, the denoising step when k1 == steps
    time_bias<kKMajor>(L, m, eval_time(sde, p, k, row % 2), phi.data(), table.data() + (size_t)row * L.width);
  }
  return table;
}

// launch(k0, k1) for each chunk of at most kChunkSteps steps
template <class Launch>
void for_each_chunk(const SampleSpec& p, Launch launch) {
  for (int k0 = 0; k0 < p.steps; k0 += kChunkSteps) launch(k0, std::min(p.steps, k0 + kChunkSteps));
}

// f(std::integral_constant<int, W>) with the instantiation for this width: W = width where
// one is compiled (register-resident activations), else W = 0 (any width <= kMaxWidth)
template <class F>
void with_width(int width, F f) {
  switch (width) {
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    default: f(std::integral_constant<int, 0>{});
  }
}

}  // namespace gpu
}  // namespace fastscore
