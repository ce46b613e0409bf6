// fastscore._core: the only file that includes pybind11. It reads as a table of the
// kernels; each entry validates its arguments, releases the GIL and calls a raw-pointer
// kernel. The Python layer (fastscore/) checks requests with user-facing messages first, but
// these checks do not rely on it: every layout field, code, index and buffer size is checked
// here before a kernel sizes or indexes anything by it (ValueError on failure).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <tuple>

#include "cpu/kernels.h"
#include "cpu/simd.h"
#include "cuda/api.h"
#include "cuda/thread_body.h"
#include "fastscore/philox.h"
#include "fastscore/program.h"

namespace py = pybind11;
using namespace fastscore;

using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
using F64 = py::array_t<double, py::array::c_style | py::array::forcecast>;
// no forcecast: a wider integer array would be cast with wrap-around before validation
using I32 = py::array_t<int32_t, py::array::c_style>;
// (dim, width, depth, activation, time_embedding, n_freqs, std_kind, (std p0, p1, T))
using LayoutTuple = std::tuple<int, int, int, int, int, int, int, std::tuple<double, double, double>>;
using SdeTuple = std::tuple<int, double, double, double>;  // (kind, p0, p1, T)

namespace {

constexpr int kMaxWidth = 1 << 14;  // sizes stay far from integer overflow
constexpr int kMaxDepth = 1 << 10;
constexpr int kMaxFreqs = 1 << 12;
constexpr int64_t kStreamIndices = int64_t(1) << 32;  // sample and step indices are 32-bit counter words

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

bool finite_all(const float* p, py::ssize_t n) {
  for (py::ssize_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) return false;
  return true;
}

SdeParams to_sde(int kind, double p0, double p1, double T, const char* what) {
  const std::string w(what);
  require(kind == kVP || kind == kVE || kind == kSubVP, w + ": unknown SDE kind " + std::to_string(kind));
  require(std::isfinite(p0) && std::isfinite(p1) && std::isfinite(T) && T > 0, w + ": parameters must be finite, T > 0");
  if (kind == kVE)
    require(p0 > 1.0, w + ": VE sigma must be > 1");
  else
    require(p0 > 0.0 && p1 >= p0, w + ": need 0 < beta_min <= beta_max");
  return SdeParams{kind, p0, p1, T};
}

SdeParams to_sde(const SdeTuple& t) { return to_sde(std::get<0>(t), std::get<1>(t), std::get<2>(t), std::get<3>(t), "sde"); }

MlpLayout to_layout(const LayoutTuple& t, const F32& weights) {
  MlpLayout L;
  std::tie(L.dim, L.width, L.depth, L.activation, L.time_embedding, L.n_freqs, L.std_kind, std::ignore) = t;
  require(L.dim >= 1 && L.dim <= cpu::kMaxDim, "layout: dim must be in [1, " + std::to_string(cpu::kMaxDim) + "]");
  require(L.width >= 1 && L.width <= kMaxWidth, "layout: width out of range");
  require(L.depth >= 1 && L.depth <= kMaxDepth, "layout: depth out of range");
  require(L.activation >= kReLU && L.activation <= kSoftplus, "layout: unknown activation code " + std::to_string(L.activation));
  require(L.time_embedding == kConcat || L.time_embedding == kFourier,
          "layout: unknown time-embedding code " + std::to_string(L.time_embedding));
  require(L.time_embedding == kFourier ? (L.n_freqs >= 1 && L.n_freqs <= kMaxFreqs) : L.n_freqs == 0,
          "layout: n_freqs must be in [1, 4096] for the Fourier embedding and 0 otherwise");
  const auto& sp = std::get<7>(t);
  L.std_sde = SdeParams{-1, 0, 0, 1};
  require(L.std_kind >= -1, "layout: std_kind must be -1 (no output scaling) or an SDE kind");
  if (L.std_kind >= 0) L.std_sde = to_sde(L.std_kind, std::get<0>(sp), std::get<1>(sp), std::get<2>(sp), "layout std_sde");
  require(weights.ndim() == 1 && (size_t)weights.size() == packed_size(L),
          "weights must be a 1-D float32 buffer of packed_size(layout) = " + std::to_string(packed_size(L)) + " values");
  require(finite_all(weights.data(), weights.size()), "weights must be finite");
  return L;
}

// the CUDA kernels' per-thread arrays are sized by cuda::kMax* (thread_body.h)
MlpLayout to_cuda_layout(const LayoutTuple& t, const F32& weights) {
  const MlpLayout L = to_layout(t, weights);
  require(L.dim <= cuda::kMaxDim && L.width <= cuda::kMaxWidth && embed_dim(L) <= cuda::kMaxEmbed,
          "layout out of range for the CUDA kernels (dim <= 8, width <= 256, <= 32 Fourier features)");
  return L;
}

// The program and its tables, every field checked against the others (program.h).
SamplePlan to_sample_plan(const MlpLayout& L, const I32& ops, int n_body, int n_slots, int n_registers, const F32& coef,
                          const F32& bias, const F32& scale, double prior_std, int64_t n, uint64_t seed, int64_t start) {
  require(ops.ndim() == 2 && ops.shape(1) == kOpWidth && ops.shape(0) >= 1 && ops.shape(0) <= (1 << 20),
          "ops must be int32 [n_ops >= 1, 12]");
  require(n_body >= 0 && n_body <= ops.shape(0), "n_body must be in [0, n_ops]");
  require(n_slots >= 1 && n_slots <= 1024, "n_slots must be in [1, 1024]");
  require(n_registers >= 1 && n_registers <= kMaxRegisters, "n_registers must be in [1, 8]");
  require(coef.ndim() == 2 && coef.shape(0) >= 2 && coef.shape(0) - 1 < kStreamIndices,
          "coef must be float32 [steps + 1, n_coefficients] with 1 <= steps < 2**32");
  const int64_t steps = coef.shape(0) - 1, n_coef = coef.shape(1), rows = steps * n_slots + 1;
  require(bias.ndim() == 2 && bias.shape(0) == rows && bias.shape(1) == L.width,
          "bias must be float32 [steps * n_slots + 1, width]");
  require(scale.ndim() == 1 && scale.shape(0) == rows, "scale must be float32 [steps * n_slots + 1]");
  require(finite_all(coef.data(), coef.size()) && finite_all(bias.data(), bias.size()) &&
              finite_all(scale.data(), scale.size()),
          "coef, bias and scale must be finite");
  require(std::isfinite(prior_std) && prior_std > 0, "prior_std must be finite and > 0");
  require(n >= 0 && start >= 0 && start + n <= kStreamIndices, "need n >= 0, start >= 0, start + n <= 2**32");
  for (py::ssize_t i = 0; i < ops.shape(0); ++i) {
    const int32_t* op = ops.data(i, 0);
    const bool final = i >= n_body;
    const std::string at = "ops[" + std::to_string(i) + "]: ";
    require(op[1] >= 0 && op[1] < n_registers, at + "destination register out of range");
    switch (op[0]) {
      case kEval:
        require(op[2] >= 0 && op[2] < n_registers, at + "source register out of range");
        require(op[3] >= 0 && op[3] < (final ? 1 : n_slots), at + "evaluation slot out of range");
        break;
      case kDraw:
        require(!final, at + "the final program may not draw noise");
        require(op[2] >= 0, at + "stream must be >= 0");
        break;
      case kLin:
        require(op[2] >= 1 && op[2] <= kMaxTerms, at + "a Lin takes 1 to 4 terms");
        for (int j = 0; j < op[2]; ++j)
          require(op[4 + 2 * j] >= 0 && op[4 + 2 * j] < n_registers && op[5 + 2 * j] >= 0 && op[5 + 2 * j] < n_coef,
                  at + "term register or coefficient out of range");
        break;
      default: require(false, at + "unknown opcode " + std::to_string(op[0]));
    }
  }
  return SamplePlan{ops.data(), (int)ops.shape(0), n_body, n_slots, n_registers, (int)n_coef, (int)steps,
                    coef.data(), bias.data(), scale.data(), (float)prior_std, seed, start};
}

// The integrator as fastscore/backends/cpu.py integrator_args encodes it (ode.h): tableau
// float64 [stages + 3, stages] (rows: c, a (stages rows), b, e), controller float64 [6]
// (h0_fraction, safety, min_factor, max_factor, exponent, max_attempts, min_step_fraction).
LogProbPlan to_log_prob_plan(const SdeParams& sde, bool adaptive, const F64& tableau, const F64& controller, int steps,
                             double eps, double rtol, double atol, bool hutchinson, uint64_t seed) {
  require(tableau.ndim() == 2 && tableau.shape(1) >= 1 && tableau.shape(1) <= kMaxStages &&
              tableau.shape(0) == tableau.shape(1) + 3,
          "tableau must be float64 [stages + 3, stages] with 1 <= stages <= 7");
  require(controller.ndim() == 1 && controller.shape(0) == 7, "controller must be float64 [7]");
  for (py::ssize_t i = 0; i < tableau.size(); ++i) require(std::isfinite(tableau.data()[i]), "tableau must be finite");
  LogProbPlan p{};
  Tableau& tab = p.tab;
  tab.stages = (int)tableau.shape(1);
  const int S = tab.stages;
  for (int i = 0; i < S; ++i) {
    tab.c[i] = tableau.at(0, i);
    tab.b[i] = tableau.at(S + 1, i);
    tab.e[i] = tableau.at(S + 2, i);
    for (int j = 0; j < S; ++j) {
      tab.a[i][j] = tableau.at(1 + i, j);
      require(j < i || tab.a[i][j] == 0.0, "tableau: a must be strictly lower triangular (explicit methods)");
    }
  }
  if (adaptive) {  // the last stage is the derivative at the new point y + h sum b_i k_i, t + h
    require(S >= 2 && tab.c[S - 1] == 1.0 && tab.b[S - 1] == 0.0, "tableau: an adaptive pair needs c[-1] = 1, b[-1] = 0");
    for (int j = 0; j < S - 1; ++j) require(tab.a[S - 1][j] == tab.b[j], "tableau: an adaptive pair needs a[-1] = b");
  }
  const double* c = controller.data();
  for (int i = 0; i < 7; ++i) require(std::isfinite(c[i]), "controller must be finite");
  require(c[0] > 0 && c[0] <= 1 && c[1] > 0 && c[2] > 0 && c[2] <= 1 && c[3] >= 1 && c[4] < 0 && c[5] >= 1 && c[5] <= 1e9 &&
              c[6] > 0 && c[6] < c[0],
          "controller out of range");
  p.ctl = Controller{c[0], c[1], c[2], c[3], c[4], (int64_t)c[5], c[6]};
  require(steps >= 1, "steps must be >= 1");
  require(std::isfinite(eps) && eps > 0 && eps < sde.T, "eps must be in (0, T)");
  require(std::isfinite(rtol) && rtol > 0 && std::isfinite(atol) && atol > 0, "rtol and atol must be finite and > 0");
  p.adaptive = adaptive;
  p.steps = steps;
  p.eps = eps;
  p.rtol = rtol;
  p.atol = atol;
  p.hutchinson = hutchinson;
  p.seed = seed;
  return p;
}

void check_rows(const F32& x, int dim) {
  require(x.ndim() == 2 && x.shape(1) == dim, "x must be [n, dim]");
  require(finite_all(x.data(), x.size()), "x must be finite");
}

void check_time(double t) { require(std::isfinite(t), "t must be finite"); }

F32 new_rows(int64_t n, int dim) { return F32({(py::ssize_t)n, (py::ssize_t)dim}); }

// A host sampler (CPU kernel or CUDA emulation) run without the GIL: kernel(weights, out) fills
// out [n, dim].
template <class Kernel>
F32 run_sample(const MlpLayout& L, const F32& weights, int64_t n, Kernel kernel) {
  F32 out = new_rows(n, L.dim);
  const float* w = weights.data();
  float* op = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    kernel(w, op);
  }
  return out;
}

// A host likelihood run without the GIL: kernel(weights, x, n, logp, nfe) returns the number of
// failed rk45 solves. Returns (log p [n], nfe [n], failed).
template <class Kernel>
py::tuple run_log_prob(const MlpLayout& L, const F32& weights, const F32& x, Kernel kernel) {
  check_rows(x, L.dim);
  const int64_t n = x.shape(0);
  F64 logp(n);
  py::array_t<int64_t> nfe(n);
  const float *w = weights.data(), *xp = x.data();
  double* lp = logp.mutable_data();
  int64_t* np_ = nfe.mutable_data();
  int64_t failed;
  {
    py::gil_scoped_release nogil;
    failed = kernel(w, xp, n, lp, np_);
  }
  return py::make_tuple(logp, nfe, failed);
}
}  // namespace

// the arguments of every sampler entry: the packed model, then the plan (fastscore/backends/cpu.py program_args)
#define SAMPLE_ARGS                                                                                              \
  py::arg("weights"), py::arg("layout"), py::arg("ops"), py::arg("n_body"), py::arg("n_slots"),                 \
      py::arg("n_registers"), py::arg("coef"), py::arg("bias"), py::arg("scale"), py::arg("prior_std"), py::arg("n"), \
      py::arg("seed"), py::arg("start")

PYBIND11_MODULE(_core, mod) {
  mod.doc() = "fastscore compiled kernels (see fastscore/backends for the Python side)";

  mod.def("build_info", [] {
    py::dict d;
    d["openmp_threads"] = cpu::max_threads();
    d["isa"] = cpu::kIsa;
    d["tile"] = cpu::kTile;
    d["max_dim"] = cpu::kMaxDim;
#ifdef FASTSCORE_WITH_CUDA
    d["cuda_compiled"] = true;
#else
    d["cuda_compiled"] = false;
#endif
    d["cuda_max_dim"] = cuda::kMaxDim;
    d["cuda_max_width"] = cuda::kMaxWidth;
    d["cuda_max_embed"] = cuda::kMaxEmbed;
    return d;
  });

  mod.def(
      "fma_peak_gflops",
      [](int64_t iters) {
        py::gil_scoped_release nogil;
        return cpu::fma_peak_gflops(iters);
      },
      "measured FP32 FMA peak of all OpenMP threads in GFLOP/s", py::arg("iters") = 20000000);

  mod.def(
      "philox",
      [](py::array_t<uint32_t, py::array::c_style | py::array::forcecast> ctr, uint64_t seed) {
        require(ctr.ndim() == 2 && ctr.shape(1) == 4, "counter must be [n, 4]");
        py::array_t<uint32_t> out({ctr.shape(0), (py::ssize_t)4});
        const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
        for (py::ssize_t i = 0; i < ctr.shape(0); ++i) philox4x32_10(ctr.data(i, 0), key, out.mutable_data(i, 0));
        return out;
      },
      "Philox4x32-10 of counters [n, 4] under the key of `seed`", py::arg("counter"), py::arg("seed"));

  mod.def(
      "normals",
      [](uint64_t seed, py::array_t<int64_t, py::array::c_style | py::array::forcecast> samples, uint32_t step,
         uint32_t stream, int dim, bool single) {
        require(dim >= 1 && dim <= cpu::kMaxDim, "dim out of range");
        require(samples.ndim() == 1, "samples must be 1-D");
        for (py::ssize_t i = 0; i < samples.shape(0); ++i)
          require(samples.at(i) >= 0 && samples.at(i) < kStreamIndices, "sample indices must be in [0, 2**32)");
        F64 out({samples.shape(0), (py::ssize_t)dim});
        for (py::ssize_t i = 0; i < samples.shape(0); ++i) {
          double* row = out.mutable_data(i, 0);
          if (single) {
            float zf[cpu::kMaxDim];
            draw_normals<float>(seed, (uint32_t)samples.at(i), step, stream, dim, zf);
            for (int d = 0; d < dim; ++d) row[d] = zf[d];
          } else {
            draw_normals<double>(seed, (uint32_t)samples.at(i), step, stream, dim, row);
          }
        }
        return out;
      },
      "normals [n, dim] of the shared stream, Box-Muller in float32 (single) or float64",
      py::arg("seed"), py::arg("samples"), py::arg("step"), py::arg("stream"), py::arg("dim"),
      py::arg("single") = false);

  mod.def(
      "sde_coefficients",
      [](const SdeTuple& sde, F64 t) {
        const SdeParams s = to_sde(sde);
        F64 out({t.size(), (py::ssize_t)5});
        for (py::ssize_t i = 0; i < t.size(); ++i) {
          const double ti = t.data()[i];
          double* r = out.mutable_data(i, 0);
          r[0] = drift_coeff(s, ti);
          r[1] = diffusion_sq(s, ti);
          r[2] = mean_coeff(s, ti);
          r[3] = marginal_std(s, ti);
          r[4] = prior_std(s);
        }
        return out;
      },
      "[len(t), 5]: f(t), g(t)^2, m(t), sigma(t), prior std from csrc/include/fastscore/sde.h",
      py::arg("sde"), py::arg("t"));

  mod.def(
      "mlp_eval",
      [](F32 weights, const LayoutTuple& layout, F32 x, double t) {
        const MlpLayout L = to_layout(layout, weights);
        check_rows(x, L.dim);
        check_time(t);
        const int64_t n = x.shape(0);
        F32 out = new_rows(n, L.dim);
        const float* w = weights.data();
        const float* xp = x.data();
        float* op = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          cpu::mlp_eval(L, w, xp, n, t, op);
        }
        return out;
      },
      "s_theta(x, t) [n, dim] by the tiled CPU forward pass", py::arg("weights"), py::arg("layout"), py::arg("x"),
      py::arg("t"));

  mod.def(
      "sample",
      [](F32 weights, const LayoutTuple& layout, I32 ops, int n_body, int n_slots, int n_registers, F32 coef, F32 bias,
         F32 scale, double prior_std, int64_t n, uint64_t seed, int64_t start) {
        const MlpLayout L = to_layout(layout, weights);
        const SamplePlan p =
            to_sample_plan(L, ops, n_body, n_slots, n_registers, coef, bias, scale, prior_std, n, seed, start);
        return run_sample(L, weights, n, [&](const float* w, float* out) { cpu::sample(L, w, p, n, out); });
      },
      "fused sampler running a step program (fastscore/program.py) with its tables: [n, dim]",
      SAMPLE_ARGS);

  mod.def(
      "score_trace",
      [](F32 weights, const LayoutTuple& layout, F32 x, double t, bool hutchinson, uint64_t seed) {
        const MlpLayout L = to_layout(layout, weights);
        check_rows(x, L.dim);
        check_time(t);
        const int64_t n = x.shape(0);
        F32 s = new_rows(n, L.dim);
        F32 tr(n);
        const float *w = weights.data(), *xp = x.data();
        float *sp = s.mutable_data(), *tp = tr.mutable_data();
        {
          py::gil_scoped_release nogil;
          cpu::score_trace(L, w, xp, n, t, hutchinson, seed, sp, tp);
        }
        return py::make_tuple(s, tr);
      },
      "(s_theta(x, t) [n, dim], tr ds/dx [n]) by forward-mode tangents (Hutchinson: probes of `seed`)",
      py::arg("weights"), py::arg("layout"), py::arg("x"), py::arg("t"), py::arg("hutchinson"), py::arg("seed"));

  mod.def(
      "log_prob",
      [](F32 weights, const LayoutTuple& layout, const SdeTuple& sde, F32 x, bool adaptive, F64 tableau, F64 controller,
         int steps, double eps, double rtol, double atol, bool hutchinson, uint64_t seed) {
        const MlpLayout L = to_layout(layout, weights);
        const SdeParams s = to_sde(sde);
        const LogProbPlan spec =
            to_log_prob_plan(s, adaptive, tableau, controller, steps, eps, rtol, atol, hutchinson, seed);
        return run_log_prob(L, weights, x, [&](const float* w, const float* xp, int64_t n, double* lp, int64_t* nfe) {
          return cpu::log_prob(L, w, s, spec, xp, n, lp, nfe);
        });
      },
      "(log p [n], nfe [n], failed) by the probability-flow ODE with the given integrator",
      py::arg("weights"), py::arg("layout"), py::arg("sde"), py::arg("x"), py::arg("adaptive"), py::arg("tableau"), py::arg("controller"), py::arg("steps"),
      py::arg("eps"), py::arg("rtol"), py::arg("atol"), py::arg("hutchinson"), py::arg("seed"));

  // The CUDA kernels' launches with every thread body run on the CPU (csrc/cuda/emulate.cpp).
  mod.def(
      "emulate_sample",
      [](F32 weights, const LayoutTuple& layout, I32 ops, int n_body, int n_slots, int n_registers, F32 coef, F32 bias,
         F32 scale, double prior_std, int64_t n, uint64_t seed, int64_t start, bool stage_shared) {
        const MlpLayout L = to_cuda_layout(layout, weights);
        const SamplePlan p =
            to_sample_plan(L, ops, n_body, n_slots, n_registers, coef, bias, scale, prior_std, n, seed, start);
        return run_sample(L, weights, n,
                          [&](const float* w, float* out) { cuda::emulate_sample(L, w, p, n, out, stage_shared); });
      },
      "the CUDA sampler launch emulated on the CPU: [n, dim]", SAMPLE_ARGS, py::arg("stage_shared"));

  mod.def(
      "emulate_log_prob",
      [](F32 weights, const LayoutTuple& layout, const SdeTuple& sde, F32 x, bool adaptive, F64 tableau, F64 controller,
         int steps, double eps, double rtol, double atol, bool hutchinson, uint64_t seed, bool stage_shared) {
        const MlpLayout L = to_cuda_layout(layout, weights);
        const SdeParams s = to_sde(sde);
        const LogProbPlan spec =
            to_log_prob_plan(s, adaptive, tableau, controller, steps, eps, rtol, atol, hutchinson, seed);
        return run_log_prob(L, weights, x, [&](const float* w, const float* xp, int64_t n, double* lp, int64_t* nfe) {
          return cuda::emulate_log_prob(L, w, s, spec, xp, n, lp, nfe, stage_shared);
        });
      },
      "the CUDA likelihood launch emulated on the CPU: (log p [n], nfe [n], failed)", py::arg("weights"),
      py::arg("layout"), py::arg("sde"), py::arg("x"), py::arg("adaptive"), py::arg("tableau"), py::arg("controller"), py::arg("steps"), py::arg("eps"),
      py::arg("rtol"), py::arg("atol"), py::arg("hutchinson"), py::arg("seed"), py::arg("stage_shared"));

#ifdef FASTSCORE_WITH_CUDA
  // The CUDA kernels on device pointers (integers), queued on the caller's stream.
  mod.def("cuda_devices", [] {
    std::string reason;
    const int count = cuda::device_count(&reason);
    py::list names;
    for (int d = 0; d < count; ++d) names.append(cuda::device_name(d));
    return py::make_tuple(names, reason);
  }, "(names of the usable CUDA devices, the runtime's reason when there are none)");

  mod.def(
      "cuda_sample",
      [](F32 weights, const LayoutTuple& layout, I32 ops, int n_body, int n_slots, int n_registers, F32 coef, F32 bias,
         F32 scale, double prior_std, int64_t n, uint64_t seed, int64_t start, uintptr_t out, int device,
         uintptr_t stream) {
        const MlpLayout L = to_cuda_layout(layout, weights);
        const SamplePlan p =
            to_sample_plan(L, ops, n_body, n_slots, n_registers, coef, bias, scale, prior_std, n, seed, start);
        const float* w = weights.data();
        py::gil_scoped_release nogil;
        cuda::sample(L, w, p, n, reinterpret_cast<float*>(out), device, stream);
      },
      "queue the fused CUDA sampler writing [n, dim] float32 at device pointer `out`", SAMPLE_ARGS, py::arg("out"),
      py::arg("device"), py::arg("stream"));

  mod.def(
      "cuda_log_prob",
      [](F32 weights, const LayoutTuple& layout, const SdeTuple& sde, uintptr_t x, int64_t n, bool adaptive,
         F64 tableau, F64 controller, int steps, double eps, double rtol, double atol, bool hutchinson, uint64_t seed,
         uintptr_t logp, uintptr_t nfe, int device, uintptr_t stream) {
        const MlpLayout L = to_cuda_layout(layout, weights);
        const SdeParams s = to_sde(sde);
        const LogProbPlan spec =
            to_log_prob_plan(s, adaptive, tableau, controller, steps, eps, rtol, atol, hutchinson, seed);
        require(n >= 0, "n must be >= 0");
        const float* w = weights.data();
        py::gil_scoped_release nogil;
        return cuda::log_prob(L, w, s, spec, reinterpret_cast<const float*>(x), n, reinterpret_cast<double*>(logp),
                             reinterpret_cast<int64_t*>(nfe), device, stream);
      },
      "the CUDA likelihood on device pointers x [n, dim] float32 -> logp [n] float64, nfe [n] int64; "
      "waits for `stream` and returns the number of failed rk45 solves",
      py::arg("weights"), py::arg("layout"), py::arg("sde"), py::arg("x"), py::arg("n"), py::arg("adaptive"), py::arg("tableau"), py::arg("controller"),
      py::arg("steps"), py::arg("eps"), py::arg("rtol"), py::arg("atol"), py::arg("hutchinson"), py::arg("seed"),
      py::arg("logp"), py::arg("nfe"), py::arg("device"), py::arg("stream"));
#endif
}
