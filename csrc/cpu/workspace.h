// One thread's lane arrays for the likelihood and the adaptive samplers (fastscore/likelihood.h
// OdeBuffers), owned, for nt tangent directions: a tile's, and a lone sample's.
#pragma once
#include <vector>

#include "fastscore/likelihood.h"
#include "tile.h"

namespace fastscore {
namespace cpu {

struct LpWorkspace {
  LpWorkspace(const NetLayout& L, int nt)
      : arenas(L), dT((size_t)nt * L.lane_arena), dirs(nt * L.dim), s(L.dim), y(L.dim + 1), y1(L.dim + 1),
        y5(L.dim + 1), comp(1), K(kMaxStages * (L.dim + 1)), ta(L.time_arena) {}
  NetArenas arenas;
  std::vector<Lanes> dT, dirs, s, y, y1, y5, comp, K;
  std::vector<TimeLanes> ta;
  OdeBuffers<Lanes> buffers() {
    return OdeBuffers<Lanes>{arenas.a.data(), dT.data(), dirs.data(), s.data(), y.data(),
                             y1.data(),       y5.data(), comp.data(), K.data(), ta.data()};
  }
};

// A lone sample's arrays (lane type float) for the same integrations, owned: the likelihood
// with nt tangent directions, the adaptive samplers with nt = 0 (and wt for ggf_steps).
struct LoneWorkspace {
  LoneWorkspace(const NetLayout& L, int nt)
      : a(L.lane_arena), dT((size_t)nt * L.lane_arena), dirs(nt * L.dim), s(L.dim), y(L.dim + 1), y1(L.dim + 1),
        y5(L.dim + 1), comp(1), K(kMaxStages * (L.dim + 1)), ta(L.time_arena), ca(L.cond_arena), wt(5 * L.dim) {}
  std::vector<float> a, dT, dirs, s, y, y1, y5, comp, K;
  std::vector<double> ta, ca, wt;
  OdeBuffers<float> buffers() {
    return OdeBuffers<float>{a.data(),  dT.data(), dirs.data(), s.data(), y.data(),
                             y1.data(), y5.data(), comp.data(), K.data(), ta.data()};
  }
};

}  // namespace cpu
}  // namespace fastscore
