// fastscore._core: the only file that includes pybind11. It reads as a table of the
// kernels; each entry checks buffers, releases the GIL and calls a raw-pointer kernel.
// Argument validation with user-facing messages happens in Python (fastscore/); the
// checks here only guard memory safety.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <tuple>

#include "cpu/kernels.h"
#include "cpu/simd.h"
#include "cuda/api.h"
#include "cuda/thread_body.h"
#include "fastscore/philox.h"

namespace py = pybind11;
using namespace fastscore;

using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
using F64 = py::array_t<double, py::array::c_style | py::array::forcecast>;
// (dim, width, depth, activation, time_embedding, n_freqs, std_kind, (std p0, p1, T))
using LayoutTuple = std::tuple<int, int, int, int, int, int, int, std::tuple<double, double, double>>;
using SdeTuple = std::tuple<int, double, double, double>;  // (kind, p0, p1, T)

namespace {

MlpLayout to_layout(const LayoutTuple& t, const F32& weights) {
  MlpLayout L;
  std::tie(L.dim, L.width, L.depth, L.activation, L.time_embedding, L.n_freqs, L.std_kind, std::ignore) = t;
  const auto& sp = std::get<7>(t);
  L.std_sde = SdeParams{L.std_kind, std::get<0>(sp), std::get<1>(sp), std::get<2>(sp)};
  if (L.dim < 1 || L.dim > cpu::kMaxDim || L.width < 1 || L.depth < 1)
    throw std::invalid_argument("layout out of range");
  if ((size_t)weights.size() != packed_size(L)) throw std::invalid_argument("weights do not match the layout");
  return L;
}

// the CUDA kernels' per-thread arrays are sized by gpu::kMax* (thread_body.h)
MlpLayout to_gpu_layout(const LayoutTuple& t, const F32& weights) {
  const MlpLayout L = to_layout(t, weights);
  if (L.dim > gpu::kMaxDim || L.width > gpu::kMaxWidth || embed_dim(L) > gpu::kMaxEmbed)
    throw std::invalid_argument("layout out of range for the CUDA kernels");
  return L;
}

SampleSpec to_sample_spec(int method, int64_t n, int steps, double eps, uint64_t seed, int64_t start, double snr,
                          int corrector_steps, bool denoise) {
  if (n < 0 || steps < 1 || method < kEM || method > kOdeHeun || corrector_steps < 0)
    throw std::invalid_argument("n >= 0, steps >= 1, a known method and corrector_steps >= 0 required");
  return SampleSpec{method, steps, eps, seed, start, snr, corrector_steps, denoise};
}

LogProbSpec to_log_prob_spec(int method, int steps, double eps, double rtol, double atol, bool hutchinson,
                             uint64_t seed) {
  if (steps < 1 || method < kLpEuler || method > kLpRk45) throw std::invalid_argument("bad method or steps");
  return LogProbSpec{method, steps, eps, rtol, atol, hutchinson, seed};
}

void check_rows(const F32& x, int dim) {
  if (x.ndim() != 2 || x.shape(1) != dim) throw std::invalid_argument("x must be [n, dim]");
}

SdeParams to_sde(const SdeTuple& t) {
  SdeParams s;
  std::tie(s.kind, s.p0, s.p1, s.T) = t;
  return s;
}

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
    d["cuda_max_dim"] = gpu::kMaxDim;
    d["cuda_max_width"] = gpu::kMaxWidth;
    d["cuda_max_embed"] = gpu::kMaxEmbed;
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
        if (ctr.ndim() != 2 || ctr.shape(1) != 4) throw std::invalid_argument("counter must be [n, 4]");
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
        if (dim < 1 || dim > cpu::kMaxDim) throw std::invalid_argument("dim out of range");
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
      [](F32 weights, const LayoutTuple& layout, const SdeTuple& sde, int method, int64_t n, int steps, double eps,
         uint64_t seed, int64_t start, double snr, int corrector_steps, bool denoise) {
        const MlpLayout L = to_layout(layout, weights);
        const SampleSpec spec = to_sample_spec(method, n, steps, eps, seed, start, snr, corrector_steps, denoise);
        const SdeParams s = to_sde(sde);
        return run_sample(L, weights, n, [&](const float* w, float* out) { cpu::sample(L, w, s, spec, n, out); });
      },
      "fused sampler (method: 0 em, 1 pc, 2 ode_euler, 3 ode_heun): [n, dim]", py::arg("weights"),
      py::arg("layout"), py::arg("sde"), py::arg("method"), py::arg("n"), py::arg("steps"), py::arg("eps"),
      py::arg("seed"), py::arg("start"), py::arg("snr"), py::arg("corrector_steps"), py::arg("denoise"));

  mod.def(
      "score_trace",
      [](F32 weights, const LayoutTuple& layout, F32 x, double t, bool hutchinson, uint64_t seed) {
        const MlpLayout L = to_layout(layout, weights);
        check_rows(x, L.dim);
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
      [](F32 weights, const LayoutTuple& layout, const SdeTuple& sde, F32 x, int method, int steps, double eps,
         double rtol, double atol, bool hutchinson, uint64_t seed) {
        const MlpLayout L = to_layout(layout, weights);
        const LogProbSpec spec = to_log_prob_spec(method, steps, eps, rtol, atol, hutchinson, seed);
        const SdeParams s = to_sde(sde);
        return run_log_prob(L, weights, x, [&](const float* w, const float* xp, int64_t n, double* lp, int64_t* nfe) {
          return cpu::log_prob(L, w, s, spec, xp, n, lp, nfe);
        });
      },
      "(log p [n], nfe [n], failed) by the probability-flow ODE (method: 0 euler, 1 heun, 2 rk4, 3 rk45)",
      py::arg("weights"), py::arg("layout"), py::arg("sde"), py::arg("x"), py::arg("method"), py::arg("steps"),
      py::arg("eps"), py::arg("rtol"), py::arg("atol"), py::arg("hutchinson"), py::arg("seed"));

  // The CUDA kernels' launches with every thread body run on the CPU (csrc/cuda/emulate.cpp).
  mod.def(
      "emulate_sample",
      [](F32 weights, const LayoutTuple& layout, const SdeTuple& sde, int method, int64_t n, int steps, double eps,
         uint64_t seed, int64_t start, double snr, int corrector_steps, bool denoise, bool stage_shared) {
        const MlpLayout L = to_gpu_layout(layout, weights);
        const SampleSpec spec = to_sample_spec(method, n, steps, eps, seed, start, snr, corrector_steps, denoise);
        const SdeParams s = to_sde(sde);
        return run_sample(L, weights, n,
                          [&](const float* w, float* out) { gpu::emulate_sample(L, w, s, spec, n, out, stage_shared); });
      },
      "the CUDA sampler launches emulated on the CPU: [n, dim]", py::arg("weights"), py::arg("layout"),
      py::arg("sde"), py::arg("method"), py::arg("n"), py::arg("steps"), py::arg("eps"), py::arg("seed"),
      py::arg("start"), py::arg("snr"), py::arg("corrector_steps"), py::arg("denoise"), py::arg("stage_shared"));

  mod.def(
      "emulate_log_prob",
      [](F32 weights, const LayoutTuple& layout, const SdeTuple& sde, F32 x, int method, int steps, double eps,
         double rtol, double atol, bool hutchinson, uint64_t seed, bool stage_shared) {
        const MlpLayout L = to_gpu_layout(layout, weights);
        const LogProbSpec spec = to_log_prob_spec(method, steps, eps, rtol, atol, hutchinson, seed);
        const SdeParams s = to_sde(sde);
        return run_log_prob(L, weights, x, [&](const float* w, const float* xp, int64_t n, double* lp, int64_t* nfe) {
          return gpu::emulate_log_prob(L, w, s, spec, xp, n, lp, nfe, stage_shared);
        });
      },
      "the CUDA likelihood launch emulated on the CPU: (log p [n], nfe [n], failed)", py::arg("weights"),
      py::arg("layout"), py::arg("sde"), py::arg("x"), py::arg("method"), py::arg("steps"), py::arg("eps"),
      py::arg("rtol"), py::arg("atol"), py::arg("hutchinson"), py::arg("seed"), py::arg("stage_shared"));

#ifdef FASTSCORE_WITH_CUDA
  // The CUDA kernels on device pointers (integers), queued on the caller's stream.
  mod.def("cuda_devices", [] {
    std::string reason;
    const int count = gpu::device_count(&reason);
    py::list names;
    for (int d = 0; d < count; ++d) names.append(gpu::device_name(d));
    return py::make_tuple(names, reason);
  }, "(names of the usable CUDA devices, the runtime's reason when there are none)");

  mod.def(
      "cuda_sample",
      [](F32 weights, const LayoutTuple& layout, const SdeTuple& sde, int method, int64_t n, int steps, double eps,
         uint64_t seed, int64_t start, double snr, int corrector_steps, bool denoise, uintptr_t out, int device,
         uintptr_t stream) {
        const MlpLayout L = to_gpu_layout(layout, weights);
        const SampleSpec spec = to_sample_spec(method, n, steps, eps, seed, start, snr, corrector_steps, denoise);
        const SdeParams s = to_sde(sde);
        const float* w = weights.data();
        py::gil_scoped_release nogil;
        gpu::sample(L, w, s, spec, n, reinterpret_cast<float*>(out), device, stream);
      },
      "queue the fused CUDA sampler writing [n, dim] float32 at device pointer `out`", py::arg("weights"),
      py::arg("layout"), py::arg("sde"), py::arg("method"), py::arg("n"), py::arg("steps"), py::arg("eps"),
      py::arg("seed"), py::arg("start"), py::arg("snr"), py::arg("corrector_steps"), py::arg("denoise"),
      py::arg("out"), py::arg("device"), py::arg("stream"));

  mod.def(
      "cuda_log_prob",
      [](F32 weights, const LayoutTuple& layout, const SdeTuple& sde, uintptr_t x, int64_t n, int method, int steps,
         double eps, double rtol, double atol, bool hutchinson, uint64_t seed, uintptr_t logp, uintptr_t nfe,
         int device, uintptr_t stream) {
        const MlpLayout L = to_gpu_layout(layout, weights);
        const LogProbSpec spec = to_log_prob_spec(method, steps, eps, rtol, atol, hutchinson, seed);
        const SdeParams s = to_sde(sde);
        const float* w = weights.data();
        py::gil_scoped_release nogil;
        return gpu::log_prob(L, w, s, spec, reinterpret_cast<const float*>(x), n, reinterpret_cast<double*>(logp),
                             reinterpret_cast<int64_t*>(nfe), device, stream);
      },
      "the CUDA likelihood on device pointers x [n, dim] float32 -> logp [n] float64, nfe [n] int64; "
      "waits for `stream` and returns the number of failed rk45 solves",
      py::arg("weights"), py::arg("layout"), py::arg("sde"), py::arg("x"), py::arg("n"), py::arg("method"),
      py::arg("steps"), py::arg("eps"), py::arg("rtol"), py::arg("atol"), py::arg("hutchinson"), py::arg("seed"),
      py::arg("logp"), py::arg("nfe"), py::arg("device"), py::arg("stream"));
#endif
}
