// The score MLP over a packed model (layout of fastscore/nn.py::pack), written once over
// a lane type V (lanes.h) for the CPU tile kernels and the CUDA kernels alike.
#pragma once
#include <cstddef>

#include "common.h"
#include "lanes.h"
#include "sde.h"

namespace fastscore {

enum Activation : int { kReLU = 0, kTanh = 1, kSiLU = 2, kLeakyReLU = 3, kSoftplus = 4 };
enum TimeEmbedding : int { kConcat = 0, kFourier = 1 };
constexpr float kLeakySlope = 0.01f;  // torch's default; fastscore/nn.py uses the same

struct MlpLayout {
  int dim, width, depth, activation, time_embedding, n_freqs;
  int std_kind;  // < 0: no output scaling; else the output is divided by sigma(t) of std_sde
  SdeParams std_sde;
};

FS_HD int embed_dim(const MlpLayout& L) { return L.time_embedding == kFourier ? 2 * L.n_freqs : 1; }

// pointers into the packed buffer
struct MlpWeights {
  const float *W0, *b0;  // [width, dim + E], [width]
  const float* hidden;   // depth - 1 blocks of W [width, width] then b [width]
  const float *Wout, *bout;  // [dim, width], [dim]
  const float* freqs;    // [n_freqs] (Fourier embedding only)
};

FS_HD size_t packed_size(const MlpLayout& L) {
  const size_t w = L.width, d = L.dim, e = embed_dim(L);
  return w * (d + e) + w + (L.depth - 1) * (w * w + w) + d * w + d +
         (L.time_embedding == kFourier ? L.n_freqs : 0);
}

FS_HD MlpWeights mlp_weights(const MlpLayout& L, const float* p) {
  const size_t w = L.width, d = L.dim, e = embed_dim(L);
  MlpWeights m;
  m.W0 = p;
  m.b0 = m.W0 + w * (d + e);
  m.hidden = m.b0 + w;
  m.Wout = m.hidden + (L.depth - 1) * (w * w + w);
  m.bout = m.Wout + d * w;
  m.freqs = m.bout + d;
  return m;
}

FS_HD const float* hidden_weight(const MlpLayout& L, const MlpWeights& m, int l) {
  return m.hidden + (size_t)(l - 1) * ((size_t)L.width * L.width + L.width);
}

// Where element (j, k) of a weight matrix lives. The packed format is out-major, W [out, in]
// (torch's): W[j * ld + k]. The CPU kernels use a k-major copy, W^T [in, out]: W[k * ld + j],
// so the J weights a dense() step broadcasts are adjacent and share one base pointer (the
// out-major walk needs J row pointers, more than x86-64 has registers). ld: the stride of
// the leading index (the full row length for out-major, the number of outputs for k-major).
template <bool KMajor>
FS_HD size_t weight_index(int j, int k, int ld) {
  return KMajor ? (size_t)k * ld + j : (size_t)j * ld + k;
}

// dst <- src with every weight matrix k-major; biases and frequencies stay where they are
inline void to_k_major(const MlpLayout& L, const float* src, float* dst) {
  for (size_t i = 0; i < packed_size(L); ++i) dst[i] = src[i];
  const MlpWeights s = mlp_weights(L, src), d = mlp_weights(L, dst);
  auto transpose = [](const float* a, float* b, int rows, int cols) {
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) b[(size_t)c * rows + r] = a[(size_t)r * cols + c];
  };
  transpose(s.W0, const_cast<float*>(d.W0), L.width, L.dim + embed_dim(L));
  for (int l = 1; l < L.depth; ++l)
    transpose(hidden_weight(L, s, l), const_cast<float*>(hidden_weight(L, d, l)), L.width, L.width);
  transpose(s.Wout, const_cast<float*>(d.Wout), L.dim, L.width);
}

// phi [E] = time features at t: t itself (concat) or sin, cos of 2 pi t w_f (Fourier)
FS_HD void time_features(const MlpLayout& L, const MlpWeights& m, double t, double* phi) {
  if (L.time_embedding == kConcat) {
    phi[0] = t;
    return;
  }
  for (int f = 0; f < L.n_freqs; ++f) {
    const double proj = 2.0 * 3.14159265358979323846 * t * (double)m.freqs[f];
    phi[f] = sin(proj);
    phi[L.n_freqs + f] = cos(proj);
  }
}

// c[j] = b0[j] + sum_e W0[j, dim + e] phi_e(t). The time features enter the first layer
// linearly, so this is one vector per time value, shared by every sample at that time;
// kernels compute it once per step (or stage), in double, and round once.
// phi: scratch [E].
template <bool KMajor>
FS_HD void time_bias(const MlpLayout& L, const MlpWeights& m, double t, double* phi, float* c) {
  const int E = embed_dim(L), ld = KMajor ? L.width : L.dim + E;
  time_features(L, m, t, phi);
  for (int j = 0; j < L.width; ++j) {
    double acc = m.b0[j];
    for (int e = 0; e < E; ++e) acc += (double)m.W0[weight_index<KMajor>(j, L.dim + e, ld)] * phi[e];
    c[j] = (float)acc;
  }
}

// factor applied to the last layer: 1 / sigma(t) with output scaling, else 1
FS_HD double output_scale(const MlpLayout& L, double t) {
  return L.std_kind < 0 ? 1.0 : 1.0 / marginal_std(L.std_sde, t);
}

// z[j] = b[j] + sum_k W(j, k) x[k] for j < n_out, every lane at once (b == nullptr: no
// bias, for tangents). J rows go together so each input lane value loaded feeds J
// independent FMA chains.
template <int J, bool KMajor, class V>
FS_HD void dense(const float* W, int ld, const float* b, int n_in, int n_out, const V* x, V* z) {
  int j = 0;
  FS_UNROLL
  for (; j + J <= n_out; j += J) {
    V acc[J];
    FS_UNROLL
    for (int r = 0; r < J; ++r) acc[r] = splat<V>(b ? b[j + r] : 0.0f);
    FS_UNROLL
    for (int k = 0; k < n_in; ++k) {
      const V xk = x[k];
      FS_UNROLL
      for (int r = 0; r < J; ++r) acc[r] += W[weight_index<KMajor>(j + r, k, ld)] * xk;
    }
    FS_UNROLL
    for (int r = 0; r < J; ++r) z[j + r] = acc[r];
  }
  for (; j < n_out; ++j) {
    V acc = splat<V>(b ? b[j] : 0.0f);
    FS_UNROLL
    for (int k = 0; k < n_in; ++k) acc += W[weight_index<KMajor>(j, k, ld)] * x[k];
    z[j] = acc;
  }
}

// Unknown codes give NaN (the bindings reject them before any kernel runs: device code cannot
// throw, and a silent default would run a network the caller did not ask for).
template <class V>
FS_HD V activation(int kind, V x) {
  using M = LaneMath<V>;
  const V zero{};
  switch (kind) {
    case kReLU: return x > 0.0f ? x : zero;
    case kTanh: {
      // tanh|x| = -expm1(-2|x|) / (2 + expm1(-2|x|)): no cancellation near 0
      const V e = M::expm1(-2.0f * (x < 0.0f ? -x : x));
      const V r = -e / (2.0f + e);
      return x < 0.0f ? -r : r;
    }
    case kSiLU: return x / (1.0f + M::exp(-x));
    case kLeakyReLU: return x > 0.0f ? x : kLeakySlope * x;
    case kSoftplus: {
      // max(x, 0) + log1p(exp(-|x|)): no overflow for large x
      const V ax = x < 0.0f ? -x : x;
      return (x > 0.0f ? x : zero) + M::log1p(M::exp(-ax));
    }
    default: return splat<V>(NAN);
  }
}

// act(x) and act'(x) together (forward-mode tangents need both)
template <class V>
FS_HD V activation_and_slope(int kind, V x, V* slope) {
  using M = LaneMath<V>;
  const V zero{}, one = splat<V>(1.0f);
  switch (kind) {
    case kTanh: {
      const V r = activation(kTanh, x);
      *slope = one - r * r;
      return r;
    }
    case kSiLU: {
      const V sig = one / (one + M::exp(-x));
      *slope = sig * (one + x * (one - sig));
      return x * sig;
    }
    case kLeakyReLU:
      *slope = x > 0.0f ? one : splat<V>(kLeakySlope);
      return x > 0.0f ? x : kLeakySlope * x;
    case kSoftplus:
      *slope = one / (one + M::exp(-x));
      return activation(kSoftplus, x);
    case kReLU:
      *slope = x > 0.0f ? one : zero;
      return x > 0.0f ? x : zero;
    default:
      *slope = splat<V>(NAN);
      return splat<V>(NAN);
  }
}

// h[j] = act(z[j]), j < n
template <class V>
FS_HD void activate(int kind, const V* z, V* h, int n) {
  FS_UNROLL
  for (int j = 0; j < n; ++j) h[j] = activation(kind, z[j]);
}

// out [dim] = s_theta(x, t) for x [dim]; c [width] = time_bias(t), scale = output_scale(t).
// h, z: scratch [width] each. Each layer goes h -> z -> act -> h with fixed roles (no
// pointer swap), so with a compile-time width both arrays can stay in GPU registers.
template <int J, bool KMajor, class V>
FS_HD void mlp_forward(const MlpLayout& L, const MlpWeights& m, const float* c, float scale,
                       const V* x, V* out, V* h, V* z) {
  dense<J, KMajor>(m.W0, KMajor ? L.width : L.dim + embed_dim(L), c, L.dim, L.width, x, z);
  activate(L.activation, z, h, L.width);
  for (int l = 1; l < L.depth; ++l) {
    const float* W = hidden_weight(L, m, l);
    dense<J, KMajor>(W, L.width, W + (size_t)L.width * L.width, L.width, L.width, h, z);
    activate(L.activation, z, h, L.width);
  }
  dense<J, KMajor>(m.Wout, KMajor ? L.dim : L.width, m.bout, L.width, L.dim, h, out);
  for (int d = 0; d < L.dim; ++d) out[d] = out[d] * scale;
}

// Stride of one direction's tangents in dh, dz: the hidden layers' width, or the output's dim
// if that is larger (a network narrower than its data)
FS_HD int tangent_stride(const MlpLayout& L) { return L.width > L.dim ? L.width : L.dim; }

// Buffers of mlp_forward_tangents, each a lane array: h, z [width]; dh, dz [nt * tangent_stride].
template <class V>
struct TangentBuffers {
  V *h, *z, *dh, *dz;
};

// Forward-mode tangents: out [dim] = s_theta(x, t) and tr = sum_i dir_i . (ds/dx) dir_i for
// nt input directions dirs [nt * dim] (the unit vectors: the exact trace; one Rademacher
// probe: Hutchinson's estimate). Tangents go through the same weights as the values, times
// act'(z) per layer: about (1 + nt) forward passes, no autograd, no noise when exact.
// Each lane carries its own time: xin [dim + E] holds x then the time features phi(t), so
// the first layer takes them as ordinary inputs; scale = output_scale(t) per lane.
template <int J, bool KMajor, class V>
FS_HD void mlp_forward_tangents(const MlpLayout& L, const MlpWeights& m, const V* xin, V scale, int nt,
                                const V* dirs, V* out, V* tr, TangentBuffers<V> b) {
  const int in0 = L.dim + embed_dim(L), w = L.width;
  const int ts = tangent_stride(L);  // direction i's tangent: [i * ts, i * ts + w) (hidden) or + dim (output)
  const int ld0 = KMajor ? w : in0;
  dense<J, KMajor>(m.W0, ld0, m.b0, in0, w, xin, b.z);
  for (int i = 0; i < nt; ++i)
    dense<J, KMajor>(m.W0, ld0, (const float*)nullptr, L.dim, w, dirs + i * L.dim, b.dz + i * ts);
  for (int l = 1; l <= L.depth; ++l) {
    FS_UNROLL
    for (int j = 0; j < w; ++j) {
      V slope;
      b.h[j] = activation_and_slope(L.activation, b.z[j], &slope);
      for (int i = 0; i < nt; ++i) b.dh[i * ts + j] = slope * b.dz[i * ts + j];
    }
    const bool last = l == L.depth;
    const float* W = last ? m.Wout : hidden_weight(L, m, l);
    const float* bias = last ? m.bout : W + (size_t)w * w;
    const int n_out = last ? L.dim : w;
    const int ld = KMajor ? n_out : w;
    dense<J, KMajor>(W, ld, bias, w, n_out, b.h, last ? out : b.z);
    for (int i = 0; i < nt; ++i) dense<J, KMajor>(W, ld, (const float*)nullptr, w, n_out, b.dh + i * ts, b.dz + i * ts);
  }
  V acc{};
  for (int i = 0; i < nt; ++i)
    for (int d = 0; d < L.dim; ++d) acc += dirs[i * L.dim + d] * b.dz[i * ts + d];
  *tr = acc * scale;
  for (int d = 0; d < L.dim; ++d) out[d] = out[d] * scale;
}

}  // namespace fastscore
