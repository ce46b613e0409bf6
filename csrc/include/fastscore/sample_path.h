// One sampler trajectory over a lane type V: the prior, the step program for every step, the
// final program. Shared by the CPU tile kernels (V = a SIMD tile, csrc/cpu/sample_cpu.cpp)
// and the CUDA kernels (V = one float per thread, csrc/cuda/). What differs between them comes
// in as two policies:
//   net(row, in, out)           out [dim] = s_theta(in) at evaluation row `row` of the plan's
//                               time table (net.h);
//   draws(step, stream, z)      z [dim] = the sample's normals at (step, stream) (philox.h).
#pragma once
#include <cstdint>

#include "common.h"
#include "net.h"
#include "normals.h"
#include "program.h"

namespace fastscore {

// The policies of one sample alone (lane type float: a CUDA thread, or a CPU call of a few
// samples). The network: the time imports from the plan's table, then the lane phase with
// dense rows computed by the policy Rows (net.h RowBlocks, or the CPU's lone_rows.h).
template <class Rows>
struct LoneNet {
  const Net& net;
  const SamplePlan& p;
  float* a;  // the lane arena [lane_arena], its cond imports set
  FS_HD void operator()(int64_t row, const float* in, float* out) const {
    const NetLayout& L = net.L;
    import_time_row(L, p.ttab + row * L.n_texp, a);
    for (int d = 0; d < L.dim; ++d) a[d] = in[d];
    run_net<Rows, float>(net, first_lane_op(L), L.n_ops, nullptr, a, Tangents<float>{nullptr, 0, 0});
    for (int d = 0; d < L.dim; ++d) out[d] = a[L.out + d];
  }
};

// The noise: the sample's normals in float (normals.h), as a tile's lane has them.
struct LoneDraws {
  uint64_t seed;
  uint32_t index;
  int dim;
  FS_HD void operator()(uint32_t step, uint32_t stream, float* z) const {
    draw_normals_float(seed, index, step, stream, dim, z);
  }
};

// reg[0] <- a draw from the prior N(0, prior_std^2 I) (step 0 of kStreamPrior); the other
// registers (the carried history of multistep rules) start at zero
template <class V, class Draws>
FS_HD void sample_prior(const SamplePlan& p, int D, Draws& draws, V* const* reg) {
  draws(0u, (uint32_t)kStreamPrior, reg[0]);
  for (int d = 0; d < D; ++d) reg[0][d] = reg[0][d] * p.prior_std;
  for (int r = 1; r < p.n_registers; ++r)
    for (int d = 0; d < D; ++d) reg[r][d] = V{};
}

// Steps k0 .. k1 - 1 of the program, moving reg[0] from t_k0 to t_k1.
template <class V, class Net, class Draws>
FS_HD void sample_steps(const SamplePlan& p, int D, int k0, int k1, Net& net, Draws& draws, V* const* reg) {
  for (int k = k0; k < k1; ++k) run_ops(p, 0, p.n_body, k, D, net, draws, reg);
}

// The final program (the denoising step), if the plan has one
template <class V, class Net, class Draws>
FS_HD void sample_final(const SamplePlan& p, int D, Net& net, Draws& draws, V* const* reg) {
  run_ops(p, p.n_body, p.n_ops, p.steps, D, net, draws, reg);
}

// The whole trajectory: prior, every step, the final program.
template <class V, class Net, class Draws>
FS_HD void sample_path(const SamplePlan& p, int D, Net& net, Draws& draws, V* const* reg) {
  sample_prior(p, D, draws, reg);
  sample_steps(p, D, 0, p.steps, net, draws, reg);
  sample_final(p, D, net, draws, reg);
}

}  // namespace fastscore
