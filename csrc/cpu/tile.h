// Moving samples between [n, dim] arrays and tiles of lanes, and filling lanes from the
// shared Philox stream (a sample's numbers depend only on its index, never on its tile).
#pragma once
#include <cstdint>
#include <vector>

#include "fastscore/net.h"
#include "fastscore/normals.h"
#include "fastscore/philox.h"
#include "kernels.h"
#include "simd.h"

namespace fastscore {
namespace cpu {

constexpr bool kKMajor = true;
using TileRows = RowBlocks<kRows, kKMajor>;  // a tile's dense rows: kRows outputs a pass over the inputs

// The network's per-thread arenas: lanes [lane_arena] and the cond phase's double scratch
// [cond_arena] (the time phase's scratch belongs to its caller: one time or a tile of times).
struct NetArenas {
  explicit NetArenas(const NetLayout& L) : a(L.lane_arena), ca(L.cond_arena) {}
  std::vector<Lanes> a;
  std::vector<double> ca;
};

// The cond imports of the tile's samples: the cond phase of each real sample's condition
// cond [count, cond_dim] (padding lanes take the first's), into a's cond region (ca: scratch).
inline void import_cond_tile(const Net& net, const double* cond, int count, double* ca, Lanes* a) {
  const NetLayout& L = net.L;
  if (L.cond_dim == 0) return;
  for (int l = 0; l < kTile; ++l)
    import_cond_lane<kKMajor>(net, cond + (int64_t)(l < count ? l : 0) * L.cond_dim, ca, a, l);
}

// number of real samples in the tile that starts at sample `first` of n
inline int tile_count(int64_t first, int64_t n) {
  const int64_t left = n - first;
  return left < kTile ? (int)left : kTile;
}

// x [dim] lanes <- rows first.. of src [n, dim]; lanes past `count` are zero
inline void load_tile(const float* src, int dim, int count, Lanes* x) {
  for (int d = 0; d < dim; ++d) x[d] = Lanes{};
  for (int l = 0; l < count; ++l)
    for (int d = 0; d < dim; ++d) x[d][l] = src[(int64_t)l * dim + d];
}

// rows of dst [n, dim] <- the first `count` lanes of x [dim]
inline void store_tile(const Lanes* x, int dim, int count, float* dst) {
  for (int l = 0; l < count; ++l)
    for (int d = 0; d < dim; ++d) dst[(int64_t)l * dim + d] = x[d][l];
}

// z [dim] lanes <- standard normals of samples index0 + lane at (step, stream): each lane's
// Philox block, then Box–Muller on all lanes at once (normals.h). Every lane is filled
// (samples past n draw numbers that are never stored) so the math stays uniform.
inline void fill_normals(uint64_t seed, int64_t index0, uint32_t step, uint32_t stream, int dim, Lanes* z) {
  normals_lanes<Lanes>(dim, [&](uint32_t block, LaneMath<Lanes>::Int* x) {
    for (int l = 0; l < kTile; ++l) {
      uint32_t w[4];
      philox_block(seed, (uint32_t)(index0 + l), step, block, stream, w);
      for (int i = 0; i < 4; ++i) x[i][l] = (int32_t)w[i];
    }
  }, z);
}

// lane l of v [dim] <- the Rademacher probe of sample `index` (stream kStreamProbe, step 0)
inline void rademacher_lane(uint64_t seed, int64_t index, int dim, Lanes* v, int l) {
  float buf[kMaxDim];
  draw_rademacher<float>(seed, (uint32_t)index, 0, dim, buf);
  for (int d = 0; d < dim; ++d) v[d][l] = buf[d];
}

// v [dim] lanes <- the Rademacher probes of samples index0 + lane
inline void fill_rademacher(uint64_t seed, int64_t index0, int dim, Lanes* v) {
  for (int l = 0; l < kTile; ++l) rademacher_lane(seed, index0 + l, dim, v, l);
}

}  // namespace cpu
}  // namespace fastscore
