// Fused samplers on the CPU: one tile of kTile samples runs its whole trajectory in SIMD
// lanes (network program + update, step after step) while OpenMP spreads tiles over cores.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "fastscore/sample_path.h"
#include "kernels.h"
#include "lone_rows.h"
#include "tile.h"

namespace fastscore {
namespace cpu {

namespace {

// out = s_theta(in) on the arena whose time and cond imports are set
void forward(const Net& net, NetArenas& w, const Lanes* in, Lanes* out) {
  const NetLayout& L = net.L;
  for (int d = 0; d < L.dim; ++d) w.a[d] = in[d];
  run_lanes<TileRows>(net, w.a.data(), Tangents<Lanes>{nullptr, 0, 0});
  for (int d = 0; d < L.dim; ++d) out[d] = w.a[L.out + d];
}

// sample_path.h's network policy: the time imports from the plan's time table
struct TableNet {
  const Net& net;
  const SamplePlan& p;
  NetArenas& w;
  void operator()(int64_t row, const Lanes* in, Lanes* out) {
    import_time_row(net.L, p.ttab + row * net.L.n_texp, w.a.data());
    forward(net, w, in, out);
  }
};

// sample_path.h's noise policy: the normals of the tile's samples index0 + lane
struct TileDraws {
  uint64_t seed;
  int64_t index0;
  int dim;
  void operator()(uint32_t step, uint32_t stream, Lanes* z) const { fill_normals(seed, index0, step, stream, dim, z); }
};

// the program's registers, [dim] lane values each (a tile's, or a lone sample's floats)
template <class V>
struct Registers {
  Registers(int dim, int n) : regs((size_t)n * dim) {
    for (int r = 0; r < n; ++r) reg[r] = regs.data() + (size_t)r * dim;
  }
  std::vector<V> regs;
  V* reg[kMaxRegisters] = {};
};

// Samples one at a time on the calling thread (n < kLoneBelow: a control loop's calls): the
// tile's trajectory with lane type float, bit for bit the same samples.
void sample_lone(const Net& net, const SamplePlan& p, const double* cond, int64_t n, float* out) {
  const NetLayout& L = net.L;
  std::vector<float> a(L.lane_arena);
  std::vector<double> ca(L.cond_arena);
  Registers<float> r(L.dim, p.n_registers);
  const LoneNet<OutputVectors> ln{net, p, a.data()};
  for (int64_t i = 0; i < n; ++i) {
    if (L.cond_dim > 0) import_cond_lane<kKMajor>(net, cond + i * L.cond_dim, ca.data(), a.data(), 0);
    const LoneDraws draws{p.seed, (uint32_t)(p.start + i), L.dim};
    sample_path(p, L.dim, ln, draws, r.reg);
    for (int d = 0; d < L.dim; ++d) out[i * L.dim + d] = r.reg[0][d];
  }
}

}  // namespace

int max_threads() { return omp_get_max_threads(); }

void net_eval(const Net& packed, size_t n_params, const float* x, const double* cond, int64_t n, double t, float* out) {
  const CpuNet staged(packed, n_params);
  const Net& net = staged.net;
  const NetLayout& L = net.L;
  const int64_t n_tiles = (n + kTile - 1) / kTile;
#pragma omp parallel
  {
    NetArenas w(L);
    Registers<Lanes> r(L.dim, 2);
    std::vector<double> ta(L.time_arena);
    std::vector<float> row(L.n_texp);
    time_table<kKMajor>(net, &t, 1, ta.data(), row.data());
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      const int count = tile_count(first, n);
      load_tile(x + first * L.dim, L.dim, count, r.reg[0]);
      import_cond_tile(net, cond + first * L.cond_dim, count, w.ca.data(), w.a.data());
      import_time_row(L, row.data(), w.a.data());
      forward(net, w, r.reg[0], r.reg[1]);
      store_tile(r.reg[1], L.dim, count, out + first * L.dim);
    }
  }
}

void sample(const Net& net, const SamplePlan& p, const double* cond, int64_t n, float* out) {
  if (n < kLoneBelow) return sample_lone(net, p, cond, n, out);
  const NetLayout& L = net.L;
  const int64_t n_tiles = (n + kTile - 1) / kTile;
  // no more threads than tiles: a team member without a tile would only cost its wake-up
  // (the fixed cost of small calls, n = 1 in a control loop)
#pragma omp parallel num_threads((int)std::min<int64_t>(n_tiles, omp_get_max_threads()))
  {
    NetArenas w(L);
    Registers<Lanes> r(L.dim, p.n_registers);
    TableNet tn{net, p, w};
    // dynamic: the last tile is short and threads on a shared machine run at uneven speeds
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      const int count = tile_count(first, n);
      import_cond_tile(net, cond + first * L.cond_dim, count, w.ca.data(), w.a.data());
      TileDraws draws{p.seed, p.start + first, L.dim};
      sample_path(p, L.dim, tn, draws, r.reg);
      store_tile(r.reg[0], L.dim, count, out + first * L.dim);
    }
  }
}

}  // namespace cpu
}  // namespace fastscore
