// The CUDA backend's host entry points (kernels.cu, built only with FASTSCORE_WITH_CUDA) and
// the emulation harness (emulate.cpp, always built). Plain pointers and integers: the
// bindings pass device pointers and the caller's stream as integers, so nothing here (and
// nothing in the module) links against libtorch.
#pragma once
#include <cstdint>
#include <string>

#include "fastscore/net.h"
#include "fastscore/ode.h"
#include "fastscore/program.h"
#include "fastscore/sde.h"
#include "thread_body.h"

namespace fastscore {
namespace cuda {

// Number of usable devices, or 0 with the CUDA runtime's reason in `reason`.
int device_count(std::string* reason);
std::string device_name(int device);

// The kernels: a host network (net.h: out-major params of n_params floats) and host cond
// [n, cond_dim] float64 (or null); out, x, logp, nfe are device pointers on `device`; work is
// queued on `stream` (a cudaStream_t as an integer, 0: the legacy default). sample returns
// once queued; log_prob waits for its stream (it reports rk45 failures). sample: `plan`'s
// tables are host memory (they are copied to the device here).
void sample(const Net& net, size_t n_params, const SamplePlan& plan, const double* cond, int64_t n, float* out,
            int device, uintptr_t stream);
int64_t log_prob(const Net& net, size_t n_params, const SdeParams& sde, const LogProbPlan& spec, const float* x,
                 const double* cond, int64_t n, double* logp, int64_t* nfe, int device, uintptr_t stream);
// The per-sample adaptive samplers (thread_body.h AdaptiveArgs: a.net and a.cond are host
// memory, the outputs device pointers); waits for its stream and returns the number of
// samples whose solve gave up.
int64_t sample_adaptive(const AdaptiveArgs& a, int device, uintptr_t stream);

// The same launches with every (block, thread) body run on the CPU, in block order; host
// pointers. stage_shared: route the params through an emulated shared-memory copy.
void emulate_sample(const Net& net, size_t n_params, const SamplePlan& plan, const double* cond, int64_t n, float* out,
                    bool stage_shared);
int64_t emulate_log_prob(const Net& net, size_t n_params, const SdeParams& sde, const LogProbPlan& spec,
                         const float* x, const double* cond, int64_t n, double* logp, int64_t* nfe, bool stage_shared);
int64_t emulate_sample_adaptive(const AdaptiveArgs& a);  // host pointers; a.stage_shared as asked

}  // namespace cuda
}  // namespace fastscore
