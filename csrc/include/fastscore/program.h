// Step programs (fastscore/program.py): the one form in which every sampler reaches the
// kernels. A program is a few int32 rows over per-sample registers of [dim] lane values
// (register 0 is the state x), with every coefficient precomputed per step by the sampler's
// rule in Python (fastscore/samplers.py) and rounded once to float32:
//   Eval  [kEval, dst, src, slot, ...]           dst <- s_theta(src) at evaluation row k * n_slots + slot
//   Draw  [kDraw, dst, stream, 0, ...]           dst <- the sample's normals at (step k, stream)
//   Lin   [kLin, dst, n, 0, r0, c0, ..., r3, c3] dst <- sum_j coef[k][c_j] * reg[r_j], j < n
// The bindings validate every field before a kernel sees a program (validate_program).
#pragma once
#include <cstdint>

#include "common.h"
#include "lanes.h"

namespace fastscore {

enum OpCode : int32_t { kEval = 0, kDraw = 1, kLin = 2 };  // fastscore/program.py EVAL, DRAW, LIN
constexpr int kOpWidth = 12;
constexpr int kMaxTerms = 4;
constexpr int kMaxRegisters = 8;

// A sampling plan as the kernels read it (fastscore/plan.py SamplePlan and KernelTables).
struct SamplePlan {
  const int32_t* ops;  // [n_ops, kOpWidth]: rows [0, n_body) every step, then the final program
  int n_ops, n_body, n_slots, n_registers, n_coefficients, steps;
  const float* coef;   // [steps + 1, n_coefficients]: row k for step k, row steps for the final program
  const float* ttab;   // [steps * n_slots + 1, n_texp]: the network's time phase per evaluation row (net.h)
  float prior_std;
  uint64_t seed;
  int64_t start;       // stream index of the first sample
};

// Rows [first, last) of the program for step k (k == steps: the final program), on registers
// reg[r] (each [D] lanes). net(row, in, out): out = s_theta(in) at evaluation row `row`;
// draws(step, stream, z): z = the normals of (step, stream).
template <class V, class Net, class Draws>
FS_HD void run_ops(const SamplePlan& p, int first, int last, int k, int D, Net& net, Draws& draws, V* const* reg) {
  const float* c = p.coef + (int64_t)k * p.n_coefficients;
  for (int i = first; i < last; ++i) {
    const int32_t* op = p.ops + (int64_t)i * kOpWidth;
    V* dst = reg[op[1]];
    if (op[0] == kEval) {
      net((int64_t)k * p.n_slots + op[3], reg[op[2]], dst);
    } else if (op[0] == kDraw) {
      draws((uint32_t)k, (uint32_t)op[2], dst);
    } else {  // kLin; terms read before dst is written, lane by lane, so dst may be a source
      const int n = op[2];
      // each term fused explicitly (LaneMath::fma), so a lone sample and a tile's lane agree bit for bit
      for (int d = 0; d < D; ++d) {
        V acc = c[op[5]] * reg[op[4]][d];
        for (int j = 1; j < n; ++j) acc = LaneMath<V>::fma(c[op[5 + 2 * j]], reg[op[4 + 2 * j]][d], acc);
        dst[d] = acc;
      }
    }
  }
}

}  // namespace fastscore
