// Host-side planning of the CUDA launches, shared by kernels.cu (real launches) and
// emulate.cpp (the same launches run on the CPU): the k-major parameters, built once per
// call on the host. The sampler's time table comes built by the bindings (net.h time_table).
#pragma once
#include <vector>

#include "thread_body.h"

namespace fastscore {
namespace cuda {

// the parameters as the kernels read them (the CPU kernels' k-major copy)
inline std::vector<float> k_major_params(const Net& net, size_t n_params) {
  std::vector<float> w(n_params);
  to_k_major(net.L, net.ops, net.params, w.data(), n_params);
  return w;
}

}  // namespace cuda
}  // namespace fastscore
