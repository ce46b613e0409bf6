// Network programs (fastscore/netprog.py): the score network as a few int32 rows over
// scratch arenas, interpreted over a lane type V (lanes.h) by the CPU tile kernels and the
// CUDA kernels alike, and over V = double for the time and cond phases (once per time value /
// per sample). Row: [op, dst, a, b, n, p0, p1, p2, tangent]; see netprog.py for each op.
// The bindings validate every row against the arenas and the parameter buffer first.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "common.h"
#include "lanes.h"
#include "sde.h"

namespace fastscore {

enum NetOp : int32_t { kDense = 0, kUnary = 1, kBinary = 2, kNorm = 3, kSdeOp = 4, kCopy = 5 };
constexpr int kNetOpWidth = 9;
enum DenseInit : int32_t { kInitNone = 0, kInitParam = 1, kInitArena = 2 };
enum OperandMode : int32_t { kModeVector = 0, kModeScalar = 1, kModeParamVector = 2, kModeParamScalar = 3 };
enum UnaryFn : int32_t {
  kRelu, kLeakyRelu, kSilu, kGelu, kGeluTanh, kTanh, kSigmoid, kElu, kSoftplus, kMish,
  kSin, kCos, kExp, kLog, kSqrt, kNeg, kReciprocal, kSquare, kNumUnary
};
enum BinaryFn : int32_t { kAdd = 0, kSub = 1, kMul = 2, kDiv = 3 };
enum SdeFn : int32_t { kSdeT = 0, kSdeSigma = 1, kSdeAlpha = 2 };
constexpr int32_t kTangentA = 1, kTangentB = 2, kTangentDst = 4;

// The header of a network program (fastscore/netprog.py NetProgram).
struct NetLayout {
  int dim, cond_dim, n_ops, n_time_ops, n_cond_ops;
  int time_arena, cond_arena, lane_arena, n_texp, n_cexp, out;
  int sde_kind;  // < 0: the program reads no sigma(t) / alpha(t)
  SdeParams sde;
};

struct Net {
  NetLayout L;
  const int32_t* ops;   // [n_ops, kNetOpWidth]
  const float* params;  // DENSE weights out-major, or k-major in the CPU kernels' copy
};

FS_HD int first_lane_op(const NetLayout& L) { return L.n_time_ops + L.n_cond_ops; }
FS_HD int time_export(const NetLayout& L) { return L.time_arena - L.n_texp; }  // offset in the time arena
FS_HD int cond_export(const NetLayout& L) { return L.cond_arena - L.n_cexp; }

// Where W[j, k] of a dense row lives (mlp layout as in torch, out-major, or k-major: the
// CPU kernels' copy, so the J weights a dense step broadcasts are adjacent).
template <bool KMajor>
FS_HD size_t weight_index(int j, int k, int n_out, int n_in) {
  return KMajor ? (size_t)k * n_out + j : (size_t)j * n_in + k;
}

// dst <- src with every dense row's weight block k-major (same offsets)
inline void to_k_major(const NetLayout& L, const int32_t* ops, const float* src, float* dst, size_t n_params) {
  for (size_t i = 0; i < n_params; ++i) dst[i] = src[i];
  for (int i = 0; i < L.n_ops; ++i) {
    const int32_t* op = ops + (size_t)i * kNetOpWidth;
    if (op[0] != kDense) continue;
    const int n_out = op[4], n_in = op[5];
    const float* a = src + op[6];
    float* b = dst + op[6];
    for (int j = 0; j < n_out; ++j)
      for (int k = 0; k < n_in; ++k) b[(size_t)k * n_out + j] = a[(size_t)j * n_in + k];
  }
}

// z[j] = init(j) + sum_k W(j, k) x[k], j0 <= j < n_out, every lane at once: J rows together so
// each input value loaded feeds J independent FMA chains; the R < J rows left over go in one
// block of R (a width of 64 in blocks of 6 ends with 4 rows: 8 chains, not 3 + 1). init: ib
// (parameters) or ia (lanes) or 0. Every output sums its products in k order, whatever J: a
// tile's lane and a lone sample (J over outputs) give the same bits.
template <int J, bool KMajor, class V, class S>
FS_HD void dense(const float* W, const float* ib, const V* ia, int n_in, int n_out, const S* x, V* z, int j0 = 0) {
  int j = j0;
  for (; j + J <= n_out; j += J) {
    V acc[J];
    FS_UNROLL
    for (int r = 0; r < J; ++r) acc[r] = ia ? ia[j + r] : splat<V>(ib ? ib[j + r] : 0.0f);
    for (int k = 0; k < n_in; ++k) {
      const V xk = x[k];
      FS_UNROLL
      for (int r = 0; r < J; ++r) acc[r] = LaneMath<V>::fma(W[weight_index<KMajor>(j + r, k, n_out, n_in)], xk, acc[r]);
    }
    FS_UNROLL
    for (int r = 0; r < J; ++r) z[j + r] = acc[r];
  }
  if constexpr (J > 1) {
    if (j < n_out) dense<J - 1, KMajor>(W, ib, ia, n_in, n_out, x, z, j);
  }
}

// How run_net computes a dense row: J adjacent outputs at a time over any lane type (above),
// weights k-major or out-major. The CPU's lone samples bring their own policy, a matrix-vector
// product vectorised over outputs (csrc/cpu/lone_rows.h), with the same bits per output.
template <int J, bool KMajor>
struct RowBlocks {
  static constexpr bool kKMajor = KMajor;  // where its weights are (the time phase reads them too)
  template <class V, class S>
  static FS_HD void dense(const float* W, const float* ib, const V* ia, int n_in, int n_out, const S* x, V* z) {
    fastscore::dense<J, KMajor>(W, ib, ia, n_in, n_out, x, z);
  }
};

// f(x) and, if slope != nullptr, f'(x), for the unary function Fn (a compile-time code, so a
// row's loop is specialised per function: no dispatch per element). p: f's parameters.
template <int Fn, class V>
FS_HD V unary_fn(const float* p, V x, V* slope) {
  using M = LaneMath<V>;
  const V zero{}, one = zero + 1.0f;
  V f, d;
  if constexpr (Fn == kRelu) {
    f = where(x > 0.0f, x, zero);
    d = where(x > 0.0f, one, zero);
  } else if constexpr (Fn == kLeakyRelu) {
    f = where(x > 0.0f, x, p[0] * x);
    d = where(x > 0.0f, one, zero + p[0]);
  } else if constexpr (Fn == kSilu) {
    const V s = M::logistic(x);
    f = x * s;
    d = s * (one + x * (one - s));
  } else if constexpr (Fn == kGelu) {  // x Phi(x)
    const V cdf = 0.5f * (one + M::erf(x * 0.70710678118654752f));
    f = x * cdf;
    d = cdf + x * 0.39894228040143268f * M::exp(-0.5f * x * x);
  } else if constexpr (Fn == kGeluTanh) {
    const V u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
    const V th = M::tanh(u);
    f = 0.5f * x * (one + th);
    d = 0.5f * (one + th) + 0.5f * x * (one - th * th) * 0.79788456080286536f * (one + 0.134145f * x * x);
  } else if constexpr (Fn == kTanh) {
    f = M::tanh(x);
    d = one - f * f;
  } else if constexpr (Fn == kSigmoid) {
    f = M::logistic(x);
    d = f * (one - f);
  } else if constexpr (Fn == kElu) {
    const V e = M::expm1(where(x < 0.0f, x, zero));
    f = where(x > 0.0f, x, p[0] * e);
    d = where(x > 0.0f, one, p[0] * (e + one));
  } else if constexpr (Fn == kSoftplus) {  // torch: x where beta x > threshold, else log1p(exp(beta x)) / beta
    const V bx = p[0] * x, ab = where(bx < 0.0f, -bx, bx);
    const V sp = (where(bx > 0.0f, bx, zero) + M::log1p(M::exp(-ab))) / p[0];
    f = where(bx > p[1], x, sp);
    d = where(bx > p[1], one, M::logistic(bx));
  } else if constexpr (Fn == kMish) {  // x tanh(softplus(x))
    const V ax = where(x < 0.0f, -x, x);
    const V sp = where(x > 0.0f, x, zero) + M::log1p(M::exp(-ax));
    const V th = M::tanh(sp);
    f = x * th;
    d = th + x * (one - th * th) * M::logistic(x);
  } else if constexpr (Fn == kSin) {
    f = M::sin(x);
    d = M::cos(x);
  } else if constexpr (Fn == kCos) {
    f = M::cos(x);
    d = -M::sin(x);
  } else if constexpr (Fn == kExp) {
    f = M::exp(x);
    d = f;
  } else if constexpr (Fn == kLog) {
    f = M::log(x);
    d = one / x;
  } else if constexpr (Fn == kSqrt) {
    f = M::sqrt(x);
    d = 0.5f / f;
  } else if constexpr (Fn == kNeg) {
    f = -x;
    d = zero - 1.0f;
  } else if constexpr (Fn == kReciprocal) {
    f = one / x;
    d = -(f * f);
  } else {
    static_assert(Fn == kSquare, "unknown unary function");
    f = x * x;
    d = 2.0f * x;
  }
  if (slope) *slope = d;
  return f;
}

// Calls body(std::integral_constant<int, fn>{}) for the runtime code fn (one dispatch per row);
// unknown codes (rejected by the bindings) call none and return false.
template <class Body>
FS_HD bool with_unary(int fn, Body&& body) {
  switch (fn) {
#define FS_UNARY_CASE(F) \
  case F: body(std::integral_constant<int, F>{}); return true;
    FS_UNARY_CASE(kRelu) FS_UNARY_CASE(kLeakyRelu) FS_UNARY_CASE(kSilu) FS_UNARY_CASE(kGelu)
    FS_UNARY_CASE(kGeluTanh) FS_UNARY_CASE(kTanh) FS_UNARY_CASE(kSigmoid) FS_UNARY_CASE(kElu)
    FS_UNARY_CASE(kSoftplus) FS_UNARY_CASE(kMish) FS_UNARY_CASE(kSin) FS_UNARY_CASE(kCos) FS_UNARY_CASE(kExp)
    FS_UNARY_CASE(kLog) FS_UNARY_CASE(kSqrt) FS_UNARY_CASE(kNeg) FS_UNARY_CASE(kReciprocal) FS_UNARY_CASE(kSquare)
#undef FS_UNARY_CASE
    default: return false;
  }
}

template <class V>
FS_HD V binary(int fn, V a, V b) {
  switch (fn) {
    case kAdd: return a + b;
    case kSub: return a - b;
    case kMul: return a * b;
    case kDiv: return a / b;
    default: return a * NAN;
  }
}

// An operand of a binary row: element j of an arena vector, an arena scalar, or a parameter.
template <class V>
struct Operand {
  const V* arena;
  const float* param;
  int mode;
  FS_HD V operator[](int j) const {
    switch (mode) {
      case kModeVector: return arena[j];
      case kModeScalar: return arena[0];
      case kModeParamVector: return splat<V>(param[j]);
      default: return splat<V>(param[0]);
    }
  }
};

FS_HD double sde_value(const NetLayout& L, int fn, double t) {
  if (fn == kSdeT) return t;
  if (L.sde_kind < 0) return NAN;
  return fn == kSdeSigma ? marginal_std(L.sde, t) : mean_coeff(L.sde, t);
}

// Forward-mode tangents of the lane phase: nt input directions, direction i of arena value
// `off` at dT[i * lane_arena + off]. nt = 0: values only.
template <class V>
struct Tangents {
  V* dT;
  int nt;
  int stride;
};

// Rows [first, last) of the program on arena `a`; t: the lanes' times, which the time phase's
// SDE rows read (the other phases have none: nullptr). Lane phase with tangents: each row whose
// result carries tangents (kTangentDst) propagates them from its operands (kTangentA /
// kTangentB; an operand without is zero). Rows: the dense rows' policy (RowBlocks).
template <class Rows, class V>
FS_HD void run_net(const Net& net, int first, int last, const double* t, V* a, Tangents<V> tg) {
  const float* P = net.params;
  for (int i = first; i < last; ++i) {
    const int32_t* op = net.ops + (size_t)i * kNetOpWidth;
    V* dst = a + op[1];
    const int n = op[4];
    const bool tan = tg.nt > 0 && (op[8] & kTangentDst);
    const bool ta = op[8] & kTangentA, tb = op[8] & kTangentB;
    switch (op[0]) {
      case kDense: {
        const float* W = P + op[6];
        const float* ib = op[7] == kInitParam ? P + op[3] : nullptr;
        const V* ia = op[7] == kInitArena ? a + op[3] : nullptr;
        Rows::dense(W, ib, ia, op[5], n, a + op[2], dst);
        if (!tan) break;
        for (int d = 0; d < tg.nt; ++d) {
          V* dt = tg.dT + (size_t)d * tg.stride;
          const V* init = op[7] == kInitArena && tb ? dt + op[3] : nullptr;
          if (ta)
            Rows::dense(W, (const float*)nullptr, init, op[5], n, dt + op[2], dt + op[1]);
          else
            for (int j = 0; j < n; ++j) dt[op[1] + j] = init ? init[j] : V{};
        }
        break;
      }
      case kUnary: {
        const float* p = P + op[6];
        const V* x = a + op[2];
        const bool known = with_unary(op[5], [&](auto fn) {
          constexpr int F = decltype(fn)::value;
          if (!tan) {
            for (int j = 0; j < n; ++j) dst[j] = unary_fn<F, V>(p, x[j], nullptr);
            return;
          }
          for (int j = 0; j < n; ++j) {
            V s;
            dst[j] = unary_fn<F, V>(p, x[j], &s);
            for (int d = 0; d < tg.nt; ++d) {
              V* dt = tg.dT + (size_t)d * tg.stride;
              dt[op[1] + j] = ta ? s * dt[op[2] + j] : V{};
            }
          }
        });
        if (!known)
          for (int j = 0; j < n; ++j) dst[j] = V{} + NAN;
        break;
      }
      case kBinary: {
        const Operand<V> A{a + op[2], P + op[2], op[6]}, B{a + op[3], P + op[3], op[7]};
        for (int j = 0; j < n; ++j) dst[j] = binary<V>(op[5], A[j], B[j]);
        if (!tan) break;
        for (int d = 0; d < tg.nt; ++d) {
          V* dt = tg.dT + (size_t)d * tg.stride;
          // operands with tangents are arena values (the bindings check), so dA, dB read dT
          const Operand<V> dA{dt + op[2], P, op[6]}, dB{dt + op[3], P, op[7]};
          for (int j = 0; j < n; ++j) {
            const V da = ta ? dA[j] : V{}, db = tb ? dB[j] : V{};
            V r;
            switch (op[5]) {
              case kAdd: r = da + db; break;
              case kSub: r = da - db; break;
              case kMul: r = da * B[j] + A[j] * db; break;
              default: r = (da - dst[j] * db) / B[j];  // d(a / b) = (da - (a / b) db) / b
            }
            dt[op[1] + j] = r;
          }
        }
        break;
      }
      case kNorm: {  // y = (x - mean) / sqrt(var + eps) * gamma + beta, over x[0:n]
        const V* x = a + op[2];
        V mean{}, var{};
        for (int j = 0; j < n; ++j) mean += x[j];
        mean = mean * (1.0f / n);
        for (int j = 0; j < n; ++j) var += (x[j] - mean) * (x[j] - mean);
        const V inv = 1.0f / LaneMath<V>::sqrt(var * (1.0f / n) + P[op[3]]);
        const float* g = op[5] >= 0 ? P + op[5] : nullptr;
        const float* be = op[6] >= 0 ? P + op[6] : nullptr;
        // dst holds the normalised y first (the tangents need it), then the affine map
        for (int j = 0; j < n; ++j) dst[j] = (x[j] - mean) * inv;
        if (tan) {
          for (int d = 0; d < tg.nt; ++d) {
            V* dt = tg.dT + (size_t)d * tg.stride;
            V m1{}, m2{};  // mean(dx), mean(y dx)
            for (int j = 0; j < n; ++j) {
              m1 += dt[op[2] + j];
              m2 += dst[j] * dt[op[2] + j];
            }
            m1 = m1 * (1.0f / n);
            m2 = m2 * (1.0f / n);
            for (int j = 0; j < n; ++j)
              dt[op[1] + j] = (dt[op[2] + j] - m1 - dst[j] * m2) * inv * (g ? g[j] : 1.0f);
          }
        }
        for (int j = 0; j < n; ++j) dst[j] = dst[j] * (g ? g[j] : 1.0f) + (be ? be[j] : 0.0f);
        break;
      }
      case kSdeOp:
        for (int l = 0; l < LaneAccess<V>::count; ++l) LaneAccess<V>::set(dst[0], l, sde_value(net.L, op[5], t[l]));
        break;
      case kCopy:
        for (int j = 0; j < n; ++j) dst[j] = a[op[2] + j];
        if (tan)
          for (int d = 0; d < tg.nt; ++d) {
            V* dt = tg.dT + (size_t)d * tg.stride;
            for (int j = 0; j < n; ++j) dt[op[1] + j] = ta ? dt[op[2] + j] : V{};
          }
        break;
      default:
        for (int j = 0; j < n; ++j) dst[j] = V{} + NAN;
    }
  }
}

// The time phase at the times t of T's lanes (T = double: one; lanes.h TimePhase) on an arena
// `ta` [time_arena]; its exports are then at ta + time_export(L).
template <bool KMajor, class T>
FS_HD void run_time(const Net& net, const double* t, T* ta) {
  run_net<RowBlocks<1, KMajor>, T>(net, 0, net.L.n_time_ops, t, ta, Tangents<T>{nullptr, 0, 0});
}

// The cond phase for one sample's condition c [cond_dim] on a double arena `ca` [cond_arena].
template <bool KMajor>
FS_HD void run_cond(const Net& net, const double* c, double* ca) {
  for (int j = 0; j < net.L.cond_dim; ++j) ca[j] = c[j];
  run_net<RowBlocks<1, KMajor>, double>(net, net.L.n_time_ops, first_lane_op(net.L), nullptr, ca, Tangents<double>{nullptr, 0, 0});
}

// The time table of a sampling plan: row r = the time phase's exports at times[r], rounded
// once to float. out [rows, n_texp]; ta: scratch [time_arena].
template <bool KMajor>
FS_HD void time_table(const Net& net, const double* times, int64_t rows, double* ta, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    run_time<KMajor>(net, times + r, ta);
    for (int j = 0; j < net.L.n_texp; ++j) out[r * net.L.n_texp + j] = (float)ta[time_export(net.L) + j];
  }
}

// The cond phase on one sample's condition c [cond_dim] (ca: double scratch [cond_arena]), its
// exports rounded once into lane l of the lane arena's cond imports.
template <bool KMajor, class V>
FS_HD void import_cond_lane(const Net& net, const double* c, double* ca, V* a, int l) {
  const NetLayout& L = net.L;
  run_cond<KMajor>(net, c, ca);
  for (int j = 0; j < L.n_cexp; ++j) LaneAccess<V>::set(a[L.dim + L.n_texp + j], l, (float)ca[cond_export(L) + j]);
}

// The lane phase: arena a [lane_arena] holds x at [0, dim) and the imports; the score is then
// at a + L.out.
template <class Rows, class V>
FS_HD void run_lanes(const Net& net, V* a, Tangents<V> tg) {
  run_net<Rows, V>(net, first_lane_op(net.L), net.L.n_ops, nullptr, a, tg);
}

// a[dim + j] <- splat(row[j]): one time value's imports for every lane
template <class V>
FS_HD void import_time_row(const NetLayout& L, const float* row, V* a) {
  for (int j = 0; j < L.n_texp; ++j) a[L.dim + j] = splat<V>(row[j]);
}

}  // namespace fastscore
