// One thread's lane arrays for the likelihood and the adaptive samplers (fastscore/likelihood.h
// OdeBuffers), owned, for nt tangent directions.
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

}  // namespace cpu
}  // namespace fastscore
