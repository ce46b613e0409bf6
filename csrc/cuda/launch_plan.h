// Host-side planning of the CUDA launches, shared by kernels.cu (real launches) and
// emulate.cpp (the same launches run on the CPU): the k-major weights and the choice of kernel
// instantiation by width. The sampler's tables come built from the plan (fastscore/plan.py).
#pragma once
#include <type_traits>
#include <vector>

#include "thread_body.h"

namespace fastscore {
namespace cuda {

// the weights as the kernels read them (the CPU kernels' k-major copy)
inline std::vector<float> k_major_weights(const MlpLayout& L, const float* packed) {
  std::vector<float> w(packed_size(L));
  to_k_major(L, packed, w.data());
  return w;
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

}  // namespace cuda
}  // namespace fastscore
