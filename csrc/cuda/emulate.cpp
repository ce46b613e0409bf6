// The emulation harness: the CUDA launches of kernels.cu with each (block, thread) body run
// on the CPU. Same launch plan (launch_plan.h), same grid arithmetic, same staging, same
// per-thread code (thread_body.h); only the scheduling differs (blocks one after another,
// threads in order, __syncthreads implied between staging and the bodies).
#include <vector>

#include "api.h"
#include "launch_plan.h"

namespace fastscore {
namespace cuda {

namespace {

// body(weights, i) for every thread of a grid covering n samples, weights staged per block
// into an emulated shared-memory buffer when stage_shared
template <class Body>
void run_grid(int64_t n, const std::vector<float>& weights, bool stage_shared, Body body) {
  const int grid = (int)((n + kBlock - 1) / kBlock);
  std::vector<float> shared(stage_shared ? weights.size() : 0);
  for (int block = 0; block < grid; ++block) {
    if (stage_shared) {
      for (float& v : shared) v = NAN;  // a fresh block: nothing left from the previous one
      for (int t = 0; t < kBlock; ++t) stage_weights(weights.data(), shared.data(), weights.size(), t, kBlock);
    }
    const float* w = stage_shared ? shared.data() : weights.data();
    for (int t = 0; t < kBlock; ++t) {
      const int64_t i = thread_sample(block, t, kBlock);
      if (i < n) body(w, i);
    }
  }
}

}  // namespace

void emulate_sample(const Net& net, size_t n_params, const SamplePlan& plan, const double* cond, int64_t n, float* out,
                    bool stage_shared) {
  const std::vector<float> w = k_major_params(net, n_params);
  const SampleArgs a{Net{net.L, net.ops, w.data()}, n_params, plan, cond, n, out, stage_shared};
  run_grid(n, w, stage_shared, [&](const float* wt, int64_t i) { sample_thread(a, wt, i); });
}

int64_t emulate_log_prob(const Net& net, size_t n_params, const SdeParams& sde, const LogProbPlan& spec,
                         const float* x, const double* cond, int64_t n, double* logp, int64_t* nfe, bool stage_shared) {
  const std::vector<float> w = k_major_params(net, n_params);
  const LogProbArgs a{Net{net.L, net.ops, w.data()}, n_params, sde, spec, x, cond, n, logp, nfe, stage_shared};
  int64_t failed = 0;
  run_grid(n, w, stage_shared, [&](const float* wt, int64_t i) { failed += log_prob_thread(a, wt, i); });
  return failed;
}

int64_t emulate_sample_adaptive(const AdaptiveArgs& args) {
  const std::vector<float> w = k_major_params(args.net, args.n_params);
  AdaptiveArgs a = args;
  a.net = Net{args.net.L, args.net.ops, w.data()};
  int64_t failed = 0;
  run_grid(a.n, w, a.stage_shared, [&](const float* wt, int64_t i) { failed += adaptive_thread(a, wt, i); });
  return failed;
}

}  // namespace cuda
}  // namespace fastscore
