// fastscore._core: the only file that includes pybind11. It reads as a table of the
// kernels; each entry validates its arguments, releases the GIL and calls a raw-pointer
// kernel. The Python layer (fastscore/) checks requests with user-facing messages first, but
// these checks do not rely on it: every layout field, code, index and buffer size is checked
// here before a kernel sizes or indexes anything by it (ValueError on failure).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/lone_rows.h"
#include "cpu/simd.h"
#include "cuda/api.h"
#include "cuda/thread_body.h"
#include "fastscore/normals.h"
#include "fastscore/philox.h"
#include "fastscore/net.h"
#include "fastscore/program.h"

namespace py = pybind11;
using namespace fastscore;

using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
using F64 = py::array_t<double, py::array::c_style | py::array::forcecast>;
// no forcecast: a wider integer array would be cast with wrap-around before validation
using I32 = py::array_t<int32_t, py::array::c_style>;
// (dim, cond_dim, n_time_ops, n_cond_ops, time_arena, cond_arena, lane_arena, n_texp, n_cexp, out, sde_kind,
//  (sde p0, p1, T)): fastscore/netprog.py NetProgram.header
using NetTuple = std::tuple<int, int, int, int, int, int, int, int, int, int, int, std::tuple<double, double, double>>;
using SdeTuple = std::tuple<int, double, double, double>;  // (kind, p0, p1, T)

namespace {

constexpr int kMaxArena = 1 << 16;  // sizes stay far from integer overflow, tangent arenas in memory
constexpr int kMaxCond = 1 << 12;
constexpr int kMaxNetOps = 1 << 16;
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
  require(kind >= kVP && kind <= kEDM, w + ": unknown SDE kind " + std::to_string(kind));
  require(std::isfinite(p0) && std::isfinite(p1) && std::isfinite(T) && T > 0, w + ": parameters must be finite, T > 0");
  switch (kind) {
    case kVE: require(p0 > 1.0, w + ": VE sigma must be > 1"); break;
    case kCosineVP:  // theta(T) < pi/2: the schedule ends before cos theta reaches 0
      require(p0 >= 0.0 && p0 < 1.0 && T < 1.0, w + ": cosine VP needs 0 <= s < 1, T < 1");
      break;
    case kGeometricVE: require(p0 > 0.0 && p1 > p0, w + ": need 0 < sigma_min < sigma_max"); break;
    case kEDM: break;
    default: require(p0 > 0.0 && p1 >= p0, w + ": need 0 < beta_min <= beta_max");
  }
  return SdeParams{kind, p0, p1, T};
}

SdeParams to_sde(const SdeTuple& t) { return to_sde(std::get<0>(t), std::get<1>(t), std::get<2>(t), std::get<3>(t), "sde"); }

// A network program (net.h) with every row checked against its phase's arena and the
// parameter buffer, so no row can read or write outside them.
struct CheckedNet {
  Net net;
  size_t n_params;
};

CheckedNet to_net(const F32& params, const I32& ops, const NetTuple& t) {
  NetLayout L;
  std::tie(L.dim, L.cond_dim, L.n_time_ops, L.n_cond_ops, L.time_arena, L.cond_arena, L.lane_arena, L.n_texp, L.n_cexp,
           L.out, L.sde_kind, std::ignore) = t;
  require(ops.ndim() == 2 && ops.shape(1) == kNetOpWidth && ops.shape(0) >= 1 && ops.shape(0) <= kMaxNetOps,
          "net ops must be int32 [n_ops in 1..65536, 9]");
  L.n_ops = (int)ops.shape(0);
  require(params.ndim() == 1 && params.size() < (py::ssize_t(1) << 31), "params must be a 1-D float32 buffer");
  require(finite_all(params.data(), params.size()), "params must be finite");
  const int64_t np = params.size();
  require(L.dim >= 1 && L.dim <= cpu::kMaxDim, "net: dim must be in [1, " + std::to_string(cpu::kMaxDim) + "]");
  require(L.cond_dim >= 0 && L.cond_dim <= kMaxCond, "net: cond_dim must be in [0, 4096]");
  require(L.n_time_ops >= 0 && L.n_cond_ops >= 0 && L.n_time_ops + L.n_cond_ops <= L.n_ops, "net: phase sizes out of range");
  for (int a : {L.time_arena, L.cond_arena, L.lane_arena}) require(a >= 0 && a <= kMaxArena, "net: arena size out of range");
  require(L.n_texp >= 0 && L.n_texp <= L.time_arena, "net: n_texp out of range");
  require(L.n_cexp >= 0 && L.cond_dim + L.n_cexp <= L.cond_arena, "net: n_cexp out of range");
  require(L.dim + L.n_texp + L.n_cexp <= L.lane_arena, "net: the lane arena must hold x and the imports");
  require(L.out >= 0 && L.out + L.dim <= L.lane_arena, "net: out of range");
  require(L.sde_kind >= -1, "net: sde_kind must be -1 or an SDE kind");
  L.sde = SdeParams{-1, 0, 0, 1};
  const auto& sp = std::get<11>(t);
  if (L.sde_kind >= 0) L.sde = to_sde(L.sde_kind, std::get<0>(sp), std::get<1>(sp), std::get<2>(sp), "net sde");
  auto in = [](int64_t off, int64_t n, int64_t size) { return off >= 0 && n >= 0 && off + n <= size; };
  for (int i = 0; i < L.n_ops; ++i) {
    const int32_t* op = ops.data(i, 0);
    const std::string at = "net ops[" + std::to_string(i) + "]: ";
    const bool time = i < L.n_time_ops, lane = i >= L.n_time_ops + L.n_cond_ops;
    const int64_t arena = time ? L.time_arena : lane ? L.lane_arena : L.cond_arena;
    const int n = op[4];
    require(n >= 1 && in(op[1], n, arena), at + "destination out of its arena");
    require(op[8] >= 0 && op[8] <= 7 && (lane || op[8] == 0), at + "tangent flags out of range");
    switch (op[0]) {
      case kDense:
        require(op[5] >= 1 && in(op[2], op[5], arena), at + "dense source out of its arena");
        require(op[2] + op[5] <= op[1] || op[1] + n <= op[2], at + "dense source and destination overlap");
        require(in(op[6], (int64_t)n * op[5], np), at + "dense weights out of the parameters");
        require(op[7] == kInitNone || (op[7] == kInitParam && in(op[3], n, np)) || (op[7] == kInitArena && in(op[3], n, arena)),
                at + "dense init out of range");
        require(!(op[8] & kTangentB) || op[7] == kInitArena, at + "tangent of a parameter init");
        break;
      case kUnary: {
        require(op[5] >= 0 && op[5] < kNumUnary, at + "unknown unary function " + std::to_string(op[5]));
        const int k = op[5] == kSoftplus ? 2 : (op[5] == kLeakyRelu || op[5] == kElu) ? 1 : 0;
        require(in(op[2], n, arena) && in(op[6], k, np), at + "unary operand or parameters out of range");
        break;
      }
      case kBinary:
        require(op[5] >= kAdd && op[5] <= kDiv, at + "unknown binary function " + std::to_string(op[5]));
        for (int s = 0; s < 2; ++s) {
          const int mode = op[6 + s], off = op[2 + s];
          const int64_t len = (mode == kModeScalar || mode == kModeParamScalar) ? 1 : n;
          require(mode >= kModeVector && mode <= kModeParamScalar, at + "unknown operand mode");
          require(mode <= kModeScalar ? in(off, len, arena) : in(off, len, np), at + "binary operand out of range");
          require(!(op[8] & (1 << s)) || mode <= kModeScalar, at + "tangent of a parameter operand");
        }
        break;
      case kNorm:
        require(in(op[2], n, arena) && in(op[3], 1, np) && (op[5] == -1 || in(op[5], n, np)) &&
                    (op[6] == -1 || in(op[6], n, np)),
                at + "norm operand or parameters out of range");
        break;
      case kSdeOp:
        require(time && n == 1 && op[5] >= kSdeT && op[5] <= kSdeAlpha, at + "an SDE row reads t, sigma or alpha in the time phase");
        require(op[5] == kSdeT || L.sde_kind >= 0, at + "sigma(t) and alpha(t) need the net's SDE");
        break;
      case kCopy: require(in(op[2], n, arena), at + "copy source out of its arena"); break;
      default: require(false, at + "unknown opcode " + std::to_string(op[0]));
    }
  }
  return CheckedNet{Net{L, ops.data(), params.data()}, (size_t)np};
}

// the CUDA kernels' per-thread arrays are sized by cuda::kMax* (thread_body.h)
CheckedNet to_cuda_net(const F32& params, const I32& ops, const NetTuple& t) {
  const CheckedNet c = to_net(params, ops, t);
  const NetLayout& L = c.net.L;
  require(L.dim <= cuda::kMaxDim && L.lane_arena <= cuda::kMaxArena && L.time_arena <= cuda::kMaxTimeArena &&
              L.cond_arena <= cuda::kMaxTimeArena,
          "network out of range for the CUDA kernels (dim <= 8, lane arena <= 1024, time and cond arenas <= 512)");
  return c;
}

// cond as the kernels take it: None for an unconditional net, else float64 [n, cond_dim]
const double* to_cond(const py::object& cond, const NetLayout& L, int64_t n, F64& keep) {
  if (L.cond_dim == 0) {
    require(cond.is_none(), "this network takes no condition (cond must be None)");
    return nullptr;
  }
  require(!cond.is_none(), "this network needs a condition: cond [n, cond_dim]");
  keep = F64::ensure(cond);
  require(keep && keep.ndim() == 2 && keep.shape(0) == n && keep.shape(1) == L.cond_dim, "cond must be [n, cond_dim]");
  for (py::ssize_t i = 0; i < keep.size(); ++i) require(std::isfinite(keep.data()[i]), "cond must be finite");
  return keep.data();
}

// The program and its tables, every field checked against the others (program.h).
// The time table (net.h time_table at each evaluation time) is computed here, into `table`.
SamplePlan to_sample_plan(const Net& net, const I32& ops, int n_body, int n_slots, int n_registers, const F32& coef,
                          const F64& times, double prior_std, int64_t n, uint64_t seed, int64_t start,
                          std::vector<float>& table) {
  require(ops.ndim() == 2 && ops.shape(1) == kOpWidth && ops.shape(0) >= 1 && ops.shape(0) <= (1 << 20),
          "ops must be int32 [n_ops >= 1, 12]");
  require(n_body >= 0 && n_body <= ops.shape(0), "n_body must be in [0, n_ops]");
  require(n_slots >= 1 && n_slots <= 1024, "n_slots must be in [1, 1024]");
  require(n_registers >= 1 && n_registers <= kMaxRegisters, "n_registers must be in [1, 8]");
  require(coef.ndim() == 2 && coef.shape(0) >= 2 && coef.shape(0) - 1 < kStreamIndices,
          "coef must be float32 [steps + 1, n_coefficients] with 1 <= steps < 2**32");
  const int64_t steps = coef.shape(0) - 1, n_coef = coef.shape(1), rows = steps * n_slots + 1;
  require(times.ndim() == 1 && times.shape(0) == rows, "times must be float64 [steps * n_slots + 1]");
  require(rows * (int64_t)net.L.n_texp <= (int64_t(1) << 32), "the time table would exceed 2**32 values");
  require(finite_all(coef.data(), coef.size()), "coef must be finite");
  for (py::ssize_t i = 0; i < rows; ++i) require(std::isfinite(times.data()[i]), "times must be finite");
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
  table.resize((size_t)rows * net.L.n_texp);
  {
    py::gil_scoped_release nogil;
    std::vector<double> ta(net.L.time_arena);
    time_table<false>(net, times.data(), rows, ta.data(), table.data());
  }
  return SamplePlan{ops.data(), (int)ops.shape(0), n_body, n_slots, n_registers, (int)n_coef, (int)steps,
                    coef.data(), table.data(), (float)prior_std, seed, start};
}

// The integrator as fastscore/backends/cpu.py integrator_args encodes it (ode.h): tableau
// float64 [stages + 3, stages] (rows: c, a (stages rows), b, e), controller float64 [6]
// (h0_fraction, safety, min_factor, max_factor, exponent, max_attempts, min_step_fraction).
LogProbPlan to_log_prob_plan(const SdeParams& sde, bool adaptive, const F64& tableau, const F64& controller, int steps,
                             double eps, double rtol, double atol, bool hutchinson, uint64_t seed, int64_t start) {
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
  require(start >= 0, "start must be >= 0");
  p.hutchinson = hutchinson;
  p.seed = seed;
  p.start = start;
  return p;
}

void check_rows(const F32& x, int dim) {
  require(x.ndim() == 2 && x.shape(1) == dim, "x must be [n, dim]");
  require(finite_all(x.data(), x.size()), "x must be finite");
}

void check_time(double t) { require(std::isfinite(t), "t must be finite"); }

F32 new_rows(int64_t n, int dim) { return F32({(py::ssize_t)n, (py::ssize_t)dim}); }

// An adaptive sampling run's checked inputs: the controller and, for the probability flow, the
// Dormand–Prince pair (LogProbPlan with adaptive = true).
AdaptivePlan to_adaptive_plan(const SdeTuple& sde, bool brownian, const F64& tableau, const F64& controller, double eps,
                              double rtol, double atol, bool denoise, double prior_std, int64_t n, uint64_t seed,
                              int64_t start) {
  AdaptivePlan p;
  p.sde = to_sde(sde);
  p.spec = to_log_prob_plan(p.sde, true, tableau, controller, 1, eps, rtol, atol, false, seed, 0);
  require(n >= 0 && start >= 0 && start + n <= kStreamIndices, "need n >= 0, start >= 0, start + n <= 2**32");
  require(std::isfinite(prior_std) && prior_std > 0, "prior_std must be finite and > 0");
  p.brownian = brownian;
  p.denoise = denoise;
  p.prior_std = (float)prior_std;
  p.start = start;
  return p;
}

// A host adaptive sampler (CPU kernel or CUDA emulation) run without the GIL:
// kernel(out, nfe, accepted, rejected) fills them and returns the failures.
template <class Kernel>
py::tuple run_adaptive(int dim, int64_t n, Kernel kernel) {
  F32 out = new_rows(n, dim);
  py::array_t<int64_t> nfe(n), acc(n), rej(n);
  float* op = out.mutable_data();
  int64_t *np_ = nfe.mutable_data(), *ap = acc.mutable_data(), *rp = rej.mutable_data();
  int64_t failed;
  {
    py::gil_scoped_release nogil;
    failed = kernel(op, np_, ap, rp);
  }
  return py::make_tuple(out, nfe, acc, rej, failed);
}

// A host sampler (CPU kernel or CUDA emulation) run without the GIL: kernel(out) fills out [n, dim].
template <class Kernel>
F32 run_sample(int dim, int64_t n, Kernel kernel) {
  F32 out = new_rows(n, dim);
  float* op = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    kernel(op);
  }
  return out;
}

// A host likelihood run without the GIL: kernel(x, n, logp, nfe) returns the number of failed
// rk45 solves. Returns (log p [n], nfe [n], failed).
template <class Kernel>
py::tuple run_log_prob(const F32& x, Kernel kernel) {
  const int64_t n = x.shape(0);
  F64 logp(n);
  py::array_t<int64_t> nfe(n);
  const float* xp = x.data();
  double* lp = logp.mutable_data();
  int64_t* np_ = nfe.mutable_data();
  int64_t failed;
  {
    py::gil_scoped_release nogil;
    failed = kernel(xp, n, lp, np_);
  }
  return py::make_tuple(logp, nfe, failed);
}
}  // namespace

// the network (fastscore/backends/cpu.py net_args), then the plan (program_args)
// A CPU sampler prepared once: its own copies of the network and the program (the caller may
// change its arrays afterwards), the weights staged k-major and the time table computed here,
// so run() only checks (n, seed, start, cond) and runs the kernel.
class PreparedSampler {
 public:
  PreparedSampler(F32 params, I32 ops, const NetTuple& header, I32 program, int n_body, int n_slots, int n_registers,
                  F32 coef, F64 times, double prior_std)
      : params_(copy(params)), ops_(copy(ops)), program_(copy(program)), coef_(copy(coef)),
        checked_(to_net(params_, ops_, header)), staged_(checked_.net, checked_.n_params),
        plan_(to_sample_plan(checked_.net, program_, n_body, n_slots, n_registers, coef_, times, prior_std, 0, 0, 0,
                             table_)) {}

  F32 run(const py::object& cond, int64_t n, uint64_t seed, int64_t start) const {
    require(n >= 0 && start >= 0 && start + n <= kStreamIndices, "need n >= 0, start >= 0, start + n <= 2**32");
    F64 keep;
    const double* cp = to_cond(cond, checked_.net.L, n, keep);
    SamplePlan p = plan_;
    p.seed = seed;
    p.start = start;
    return run_sample(checked_.net.L.dim, n, [&](float* out) { cpu::sample(staged_.net, p, cp, n, out); });
  }

  PreparedSampler(const PreparedSampler&) = delete;  // the plan points into its own members
  PreparedSampler& operator=(const PreparedSampler&) = delete;

 private:
  template <class A>
  static A copy(const A& a) {
    return py::cast<A>(a.attr("copy")());
  }
  F32 params_;
  I32 ops_, program_;
  F32 coef_;
  std::vector<float> table_;
  CheckedNet checked_;
  cpu::CpuNet staged_;
  SamplePlan plan_;
};

#define NET_ARGS py::arg("params"), py::arg("ops"), py::arg("header")
#define SAMPLE_ARGS                                                                                                  \
  NET_ARGS, py::arg("program"), py::arg("n_body"), py::arg("n_slots"), py::arg("n_registers"), py::arg("coef"),     \
      py::arg("times"), py::arg("prior_std"), py::arg("cond"), py::arg("n"), py::arg("seed"), py::arg("start")
#define ADAPTIVE_ARGS                                                                                                \
  NET_ARGS, py::arg("sde"), py::arg("cond"), py::arg("brownian"), py::arg("tableau"), py::arg("controller"),        \
      py::arg("eps"), py::arg("rtol"), py::arg("atol"), py::arg("denoise"), py::arg("prior_std"), py::arg("n"),      \
      py::arg("seed"), py::arg("start")
#define LOG_PROB_ARGS                                                                                                \
  NET_ARGS, py::arg("sde"), py::arg("x"), py::arg("cond"), py::arg("adaptive"), py::arg("tableau"),                 \
      py::arg("controller"), py::arg("steps"), py::arg("eps"), py::arg("rtol"), py::arg("atol"), py::arg("hutchinson"), \
      py::arg("seed")

PYBIND11_MODULE(_core, mod) {
  mod.doc() = "fastscore compiled kernels (see fastscore/backends for the Python side)";

  mod.def("build_info", [] {
    py::dict d;
    d["openmp_threads"] = cpu::max_threads();
    d["isa"] = cpu::kIsa;
    d["tile"] = cpu::kTile;
    d["lone_below"] = cpu::kLoneBelow;
    d["vector_registers"] = cpu::kVectorRegisters;
    d["fma_width"] = cpu::kFmaWidth;
    const auto counts = cpu::fma_chain_counts();
    d["fma_chains"] = std::vector<int>(counts.begin(), counts.end());
    d["max_dim"] = cpu::kMaxDim;
#ifdef FASTSCORE_WITH_CUDA
    d["cuda_compiled"] = true;
#else
    d["cuda_compiled"] = false;
#endif
    d["cuda_max_dim"] = cuda::kMaxDim;
    d["cuda_max_arena"] = cuda::kMaxArena;
    d["cuda_max_time_arena"] = cuda::kMaxTimeArena;
    return d;
  });

  mod.def(
      "fma_chains_gflops",
      [](int chains, int64_t iters, int threads) {
        const auto counts = cpu::fma_chain_counts();
        require(std::find(counts.begin(), counts.end(), chains) != counts.end(),
                "chains must be one of build_info()['fma_chains']");
        require(iters >= 1 && threads >= 0, "need iters >= 1 and threads >= 0");
        py::gil_scoped_release nogil;
        return cpu::fma_chains_gflops(chains, iters, threads);
      },
      "FP32 FMA GFLOP/s of `threads` OpenMP threads (0: all) running `chains` independent FMA chains each; "
      "fastscore.machine.fma_peak takes the best count as the machine's peak",
      py::arg("chains"), py::arg("iters") = 10000000, py::arg("threads") = 0);

  mod.def(
      "matvec_gflops",
      [](int width, int layers, int64_t iters) {
        require(width >= 1 && width <= 4096 && layers >= 1 && layers <= 64 && iters >= 1,
                "need 1 <= width <= 4096, 1 <= layers <= 64 and iters >= 1");
        py::gil_scoped_release nogil;
        return cpu::matvec_gflops(width, layers, iters);
      },
      "one thread's GFLOP/s through `layers` square dense rows of `width` as a lone sample runs them "
      "(matrix-vector products, one weight load per multiply-add): the bound of a one-sample call",
      py::arg("width"), py::arg("layers"), py::arg("iters") = 20000);

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
            draw_normals_float(seed, (uint32_t)samples.at(i), step, stream, dim, zf);
            for (int d = 0; d < dim; ++d) row[d] = zf[d];
          } else {
            draw_normals(seed, (uint32_t)samples.at(i), step, stream, dim, row);
          }
        }
        return out;
      },
      "normals [n, dim] of the shared stream: the samplers' float32 Box-Muller (single, normals.h) or float64",
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
      "net_eval",
      [](F32 params, I32 ops, const NetTuple& header, F32 x, py::object cond, double t) {
        const CheckedNet c = to_net(params, ops, header);
        check_rows(x, c.net.L.dim);
        check_time(t);
        const int64_t n = x.shape(0);
        F64 keep;
        const double* cp = to_cond(cond, c.net.L, n, keep);
        const float* xp = x.data();
        return run_sample(c.net.L.dim, n, [&](float* out) { cpu::net_eval(c.net, c.n_params, xp, cp, n, t, out); });
      },
      "s_theta(x, t) [n, dim] by the tiled CPU forward pass", NET_ARGS, py::arg("x"), py::arg("cond"), py::arg("t"));

  py::class_<PreparedSampler>(mod, "PreparedSampler",
                              "a CPU sampler checked, staged and tabulated once; run() pays only the kernel")
      .def(py::init<F32, I32, const NetTuple&, I32, int, int, int, F32, F64, double>(), NET_ARGS, py::arg("program"),
           py::arg("n_body"), py::arg("n_slots"), py::arg("n_registers"), py::arg("coef"), py::arg("times"),
           py::arg("prior_std"))
      .def("run", &PreparedSampler::run, "samples [n, dim] of stream indices start .. start + n - 1 (cond [n, "
           "cond_dim] float64 or None)", py::arg("cond"), py::arg("n"), py::arg("seed"), py::arg("start"));

  mod.def(
      "sample",
      [](F32 params, I32 ops, const NetTuple& header, I32 program, int n_body, int n_slots, int n_registers, F32 coef,
         F64 times, double prior_std, py::object cond, int64_t n, uint64_t seed, int64_t start) {
        return PreparedSampler(params, ops, header, program, n_body, n_slots, n_registers, coef, times, prior_std)
            .run(cond, n, seed, start);
      },
      "fused sampler running a step program (fastscore/program.py) with its tables: [n, dim]", SAMPLE_ARGS);

  mod.def(
      "sample_adaptive",
      [](F32 params, I32 ops, const NetTuple& header, const SdeTuple& sde, py::object cond, bool brownian,
         F64 tableau, F64 controller, double eps, double rtol, double atol, bool denoise, double prior_std, int64_t n,
         uint64_t seed, int64_t start) {
        const CheckedNet c = to_net(params, ops, header);
        const AdaptivePlan p =
            to_adaptive_plan(sde, brownian, tableau, controller, eps, rtol, atol, denoise, prior_std, n, seed, start);
        F64 keep;
        const double* cp = to_cond(cond, c.net.L, n, keep);
        return run_adaptive(c.net.L.dim, n, [&](float* out, int64_t* nfe, int64_t* acc, int64_t* rej) {
          return cpu::sample_adaptive(c.net, c.n_params, p, cp, n, out, nfe, acc, rej);
        });
      },
      "(samples [n, dim], nfe, accepted, rejected [n], failed) by a per-sample adaptive solve from T to eps: "
      "Dormand–Prince on the probability flow, or Gotta Go Fast on the reverse SDE (brownian)",
      ADAPTIVE_ARGS);

  mod.def(
      "score_trace",
      [](F32 params, I32 ops, const NetTuple& header, F32 x, py::object cond, double t, bool hutchinson, uint64_t seed) {
        const CheckedNet c = to_net(params, ops, header);
        check_rows(x, c.net.L.dim);
        check_time(t);
        const int64_t n = x.shape(0);
        F64 keep;
        const double* cp = to_cond(cond, c.net.L, n, keep);
        F32 s = new_rows(n, c.net.L.dim);
        F32 tr(n);
        const float* xp = x.data();
        float *sp = s.mutable_data(), *tp = tr.mutable_data();
        {
          py::gil_scoped_release nogil;
          cpu::score_trace(c.net, c.n_params, xp, cp, n, t, hutchinson, seed, sp, tp);
        }
        return py::make_tuple(s, tr);
      },
      "(s_theta(x, t) [n, dim], tr ds/dx [n]) by forward-mode tangents (Hutchinson: probes of `seed`)", NET_ARGS,
      py::arg("x"), py::arg("cond"), py::arg("t"), py::arg("hutchinson"), py::arg("seed"));

  mod.def(
      "log_prob",
      [](F32 params, I32 ops, const NetTuple& header, const SdeTuple& sde, F32 x, py::object cond, bool adaptive,
         F64 tableau, F64 controller, int steps, double eps, double rtol, double atol, bool hutchinson, uint64_t seed,
         int64_t start) {
        const CheckedNet c = to_net(params, ops, header);
        const SdeParams s = to_sde(sde);
        const LogProbPlan spec =
            to_log_prob_plan(s, adaptive, tableau, controller, steps, eps, rtol, atol, hutchinson, seed, start);
        check_rows(x, c.net.L.dim);
        F64 keep;
        const double* cp = to_cond(cond, c.net.L, x.shape(0), keep);
        return run_log_prob(x, [&](const float* xp, int64_t n, double* lp, int64_t* nfe) {
          return cpu::log_prob(c.net, c.n_params, s, spec, xp, cp, n, lp, nfe);
        });
      },
      "(log p [n], nfe [n], failed) by the probability-flow ODE with the given integrator", LOG_PROB_ARGS,
      py::arg("start") = 0);

  // The CUDA kernels' launches with every thread body run on the CPU (csrc/cuda/emulate.cpp).
  mod.def(
      "emulate_sample",
      [](F32 params, I32 ops, const NetTuple& header, I32 program, int n_body, int n_slots, int n_registers, F32 coef,
         F64 times, double prior_std, py::object cond, int64_t n, uint64_t seed, int64_t start, bool stage_shared) {
        const CheckedNet c = to_cuda_net(params, ops, header);
        std::vector<float> table;
        const SamplePlan p =
            to_sample_plan(c.net, program, n_body, n_slots, n_registers, coef, times, prior_std, n, seed, start, table);
        F64 keep;
        const double* cp = to_cond(cond, c.net.L, n, keep);
        return run_sample(c.net.L.dim, n,
                          [&](float* out) { cuda::emulate_sample(c.net, c.n_params, p, cp, n, out, stage_shared); });
      },
      "the CUDA sampler launch emulated on the CPU: [n, dim]", SAMPLE_ARGS, py::arg("stage_shared"));

  mod.def(
      "emulate_log_prob",
      [](F32 params, I32 ops, const NetTuple& header, const SdeTuple& sde, F32 x, py::object cond, bool adaptive,
         F64 tableau, F64 controller, int steps, double eps, double rtol, double atol, bool hutchinson, uint64_t seed,
         bool stage_shared, int64_t start) {
        const CheckedNet c = to_cuda_net(params, ops, header);
        const SdeParams s = to_sde(sde);
        const LogProbPlan spec =
            to_log_prob_plan(s, adaptive, tableau, controller, steps, eps, rtol, atol, hutchinson, seed, start);
        check_rows(x, c.net.L.dim);
        F64 keep;
        const double* cp = to_cond(cond, c.net.L, x.shape(0), keep);
        return run_log_prob(x, [&](const float* xp, int64_t n, double* lp, int64_t* nfe) {
          return cuda::emulate_log_prob(c.net, c.n_params, s, spec, xp, cp, n, lp, nfe, stage_shared);
        });
      },
      "the CUDA likelihood launch emulated on the CPU: (log p [n], nfe [n], failed)", LOG_PROB_ARGS,
      py::arg("stage_shared"), py::arg("start") = 0);

  mod.def(
      "emulate_sample_adaptive",
      [](F32 params, I32 ops, const NetTuple& header, const SdeTuple& sde, py::object cond, bool brownian,
         F64 tableau, F64 controller, double eps, double rtol, double atol, bool denoise, double prior_std, int64_t n,
         uint64_t seed, int64_t start, bool stage_shared) {
        const CheckedNet c = to_cuda_net(params, ops, header);
        const AdaptivePlan p =
            to_adaptive_plan(sde, brownian, tableau, controller, eps, rtol, atol, denoise, prior_std, n, seed, start);
        F64 keep;
        const double* cp = to_cond(cond, c.net.L, n, keep);
        return run_adaptive(c.net.L.dim, n, [&](float* out, int64_t* nfe, int64_t* acc, int64_t* rej) {
          return cuda::emulate_sample_adaptive(
              cuda::AdaptiveArgs{c.net, c.n_params, p, cp, n, out, nfe, acc, rej, stage_shared});
        });
      },
      "the CUDA adaptive sampler launch emulated on the CPU: as sample_adaptive", ADAPTIVE_ARGS,
      py::arg("stage_shared"));

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
      [](F32 params, I32 ops, const NetTuple& header, I32 program, int n_body, int n_slots, int n_registers, F32 coef,
         F64 times, double prior_std, py::object cond, int64_t n, uint64_t seed, int64_t start, uintptr_t out,
         int device, uintptr_t stream) {
        const CheckedNet c = to_cuda_net(params, ops, header);
        std::vector<float> table;
        const SamplePlan p =
            to_sample_plan(c.net, program, n_body, n_slots, n_registers, coef, times, prior_std, n, seed, start, table);
        F64 keep;
        const double* cp = to_cond(cond, c.net.L, n, keep);
        py::gil_scoped_release nogil;
        cuda::sample(c.net, c.n_params, p, cp, n, reinterpret_cast<float*>(out), device, stream);
      },
      "queue the fused CUDA sampler writing [n, dim] float32 at device pointer `out` (cond: host float64)",
      SAMPLE_ARGS, py::arg("out"), py::arg("device"), py::arg("stream"));

  mod.def(
      "cuda_log_prob",
      [](F32 params, I32 ops, const NetTuple& header, const SdeTuple& sde, uintptr_t x, int64_t n, py::object cond,
         bool adaptive, F64 tableau, F64 controller, int steps, double eps, double rtol, double atol, bool hutchinson,
         uint64_t seed, uintptr_t logp, uintptr_t nfe, int device, uintptr_t stream, int64_t start) {
        const CheckedNet c = to_cuda_net(params, ops, header);
        const SdeParams s = to_sde(sde);
        const LogProbPlan spec =
            to_log_prob_plan(s, adaptive, tableau, controller, steps, eps, rtol, atol, hutchinson, seed, start);
        require(n >= 0, "n must be >= 0");
        F64 keep;
        const double* cp = to_cond(cond, c.net.L, n, keep);
        py::gil_scoped_release nogil;
        return cuda::log_prob(c.net, c.n_params, s, spec, reinterpret_cast<const float*>(x), cp, n,
                              reinterpret_cast<double*>(logp), reinterpret_cast<int64_t*>(nfe), device, stream);
      },
      "the CUDA likelihood on device pointers x [n, dim] float32 -> logp [n] float64, nfe [n] int64 (cond: host "
      "float64); waits for `stream` and returns the number of failed rk45 solves",
      NET_ARGS, py::arg("sde"), py::arg("x"), py::arg("n"), py::arg("cond"), py::arg("adaptive"), py::arg("tableau"),
      py::arg("controller"), py::arg("steps"), py::arg("eps"), py::arg("rtol"), py::arg("atol"), py::arg("hutchinson"),
      py::arg("seed"), py::arg("logp"), py::arg("nfe"), py::arg("device"), py::arg("stream"), py::arg("start") = 0);

  mod.def(
      "cuda_sample_adaptive",
      [](F32 params, I32 ops, const NetTuple& header, const SdeTuple& sde, py::object cond, bool brownian,
         F64 tableau, F64 controller, double eps, double rtol, double atol, bool denoise, double prior_std, int64_t n,
         uint64_t seed, int64_t start, uintptr_t out, uintptr_t nfe, uintptr_t accepted, uintptr_t rejected,
         int device, uintptr_t stream) {
        const CheckedNet c = to_cuda_net(params, ops, header);
        const AdaptivePlan p =
            to_adaptive_plan(sde, brownian, tableau, controller, eps, rtol, atol, denoise, prior_std, n, seed, start);
        F64 keep;
        const double* cp = to_cond(cond, c.net.L, n, keep);
        const auto i64 = [](uintptr_t ptr) { return reinterpret_cast<int64_t*>(ptr); };
        py::gil_scoped_release nogil;
        return cuda::sample_adaptive(cuda::AdaptiveArgs{c.net, c.n_params, p, cp, n, reinterpret_cast<float*>(out),
                                                        i64(nfe), i64(accepted), i64(rejected), false},
                                     device, stream);
      },
      "the CUDA adaptive samplers on device pointers out [n, dim] float32, nfe / accepted / rejected [n] int64 "
      "(cond: host float64); waits for `stream` and returns the number of failed solves",
      ADAPTIVE_ARGS, py::arg("out"), py::arg("nfe"), py::arg("accepted"), py::arg("rejected"), py::arg("device"),
      py::arg("stream"));
#endif
}
