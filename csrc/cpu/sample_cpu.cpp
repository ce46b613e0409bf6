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

// Per-thread buffers, as lanes: the program's registers, two hidden layers; and the first
// layer's time bias at the current time (mlp_eval only).
struct Workspace {
  Workspace(const MlpLayout& L, int n_registers)
      : regs((size_t)n_registers * L.dim), h0(L.width), h1(L.width), c(L.width), phi(embed_dim(L)) {
    for (int r = 0; r < n_registers; ++r) reg[r] = regs.data() + (size_t)r * L.dim;
  }
  std::vector<Lanes> regs, h0, h1;
  Lanes* reg[kMaxRegisters] = {};
  std::vector<float> c;
  std::vector<double> phi;
};

// out = s_theta(in) with the time bias c and output scale of one time
void forward(const MlpLayout& L, const MlpWeights& m, Workspace& w, const float* c, float scale, const Lanes* in,
             Lanes* out) {
  mlp_forward<kRows, kKMajor>(L, m, c, scale, in, out, w.h0.data(), w.h1.data());
}

// sample_path.h's network policy: time bias and output scale from the plan's tables
struct TableNet {
  const MlpLayout& L;
  const MlpWeights& m;
  const SamplePlan& p;
  Workspace& w;
  void operator()(int64_t row, const Lanes* in, Lanes* out) {
    forward(L, m, w, p.bias + row * L.width, p.scale[row], in, out);
  }
};

// sample_path.h's noise policy: the normals of the tile's samples index0 + lane
struct TileDraws {
  uint64_t seed;
  int64_t index0;
  int dim;
  void operator()(uint32_t step, uint32_t stream, Lanes* z) const { fill_normals(seed, index0, step, stream, dim, z); }
};

}  // namespace

int max_threads() { return omp_get_max_threads(); }

void mlp_eval(const MlpLayout& L, const float* weights, const float* x, int64_t n, double t, float* out) {
  const CpuWeights staged(L, weights);
  const MlpWeights& m = staged.view;
  const int64_t n_tiles = (n + kTile - 1) / kTile;
#pragma omp parallel
  {
    Workspace w(L, 2);
    time_bias<kKMajor>(L, m, t, w.phi.data(), w.c.data());
    const float scale = (float)output_scale(L, t);
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      const int count = tile_count(first, n);
      load_tile(x + first * L.dim, L.dim, count, w.reg[0]);
      forward(L, m, w, w.c.data(), scale, w.reg[0], w.reg[1]);
      store_tile(w.reg[1], L.dim, count, out + first * L.dim);
    }
  }
}

void sample(const MlpLayout& L, const float* weights, const SamplePlan& p, int64_t n, float* out) {
  const CpuWeights staged(L, weights);
  const MlpWeights& m = staged.view;
  const int64_t n_tiles = (n + kTile - 1) / kTile;
#pragma omp parallel
  {
    Workspace w(L, p.n_registers);
    TableNet net{L, m, p, w};
    // dynamic: the last tile is short and threads on a shared machine run at uneven speeds
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      TileDraws draws{p.seed, p.start + first, L.dim};
      sample_path(p, L.dim, net, draws, w.reg);
      store_tile(w.reg[0], L.dim, tile_count(first, n), out + first * L.dim);
    }
  }
}

}  // namespace cpu
}  // namespace fastscore
