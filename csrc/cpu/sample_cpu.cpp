// Fused samplers on the CPU: one tile of kTile samples runs its whole trajectory in SIMD
// lanes (MLP forward + update, step after step) while OpenMP spreads tiles over cores.
#include <omp.h>

#include <vector>

#include "fastscore/sample_path.h"
#include "kernels.h"
#include "tile.h"

namespace fastscore {
namespace cpu {

namespace {

// Per-thread buffers, as lanes: state, a second state (Heun's predictor), noise, two
// scores, two hidden layers; and the first layer's time bias at the current time.
struct Workspace {
  explicit Workspace(const MlpLayout& L)
      : x(L.dim), y(L.dim), z(L.dim), s(L.dim), s2(L.dim), h0(L.width), h1(L.width), c(L.width),
        phi(embed_dim(L)) {}
  std::vector<Lanes> x, y, z, s, s2, h0, h1;
  std::vector<float> c;
  std::vector<double> phi;
};

// Runs the tile's samples through the network at time t: out = s_theta(in, t).
struct Network {
  const MlpLayout& L;
  const MlpWeights& m;
  Workspace& w;
  void operator()(double t, const Lanes* in, Lanes* out) {
    time_bias<kKMajor>(L, m, t, w.phi.data(), w.c.data());
    mlp_forward<kRows, kKMajor>(L, m, w.c.data(), (float)output_scale(L, t), in, out, w.h0.data(), w.h1.data());
  }
  // sample_path.h's policy: the evaluation's time alone matters here
  void operator()(int, int, double t, const Lanes* in, Lanes* out) { (*this)(t, in, out); }
};

// sample_path.h's noise policy: the normals of the tile's samples index0 + lane
struct TileDraws {
  uint64_t seed;
  int64_t index0;
  int dim;
  void operator()(uint32_t step, uint32_t stream, Lanes* z) const { fill_normals(seed, index0, step, stream, dim, z); }
};

void sample_tile(const MlpLayout& L, const MlpWeights& m, const SdeParams& sde, const SampleSpec& p,
                 int64_t index0, Workspace& w) {
  Network net{L, m, w};
  TileDraws draws{p.seed, index0, L.dim};
  sample_path(sde, p, L.dim, net, draws,
              PathBuffers<Lanes>{w.x.data(), w.y.data(), w.z.data(), w.s.data(), w.s2.data()});
}

}  // namespace

int max_threads() { return omp_get_max_threads(); }

void mlp_eval(const MlpLayout& L, const float* weights, const float* x, int64_t n, double t, float* out) {
  const CpuWeights staged(L, weights);
  const MlpWeights& m = staged.view;
  const int64_t n_tiles = (n + kTile - 1) / kTile;
#pragma omp parallel
  {
    Workspace w(L);
    Network net{L, m, w};
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      const int count = tile_count(first, n);
      load_tile(x + first * L.dim, L.dim, count, w.x.data());
      net(t, w.x.data(), w.s.data());
      store_tile(w.s.data(), L.dim, count, out + first * L.dim);
    }
  }
}

void sample(const MlpLayout& L, const float* weights, const SdeParams& sde, const SampleSpec& spec, int64_t n,
            float* out) {
  const CpuWeights staged(L, weights);
  const MlpWeights& m = staged.view;
  const int64_t n_tiles = (n + kTile - 1) / kTile;
#pragma omp parallel
  {
    Workspace w(L);
    // dynamic: the last tile is short and threads on a shared machine run at uneven speeds
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      sample_tile(L, m, sde, spec, spec.start + first, w);
      store_tile(w.x.data(), L.dim, tile_count(first, n), out + first * L.dim);
    }
  }
}

}  // namespace cpu
}  // namespace fastscore
