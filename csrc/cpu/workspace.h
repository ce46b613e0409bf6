// One thread's lane arrays for the likelihood and the adaptive samplers (fastscore/likelihood.h
// OdeBuffers), owned, for nt tangent directions, over lane type V: a tile's (Lanes) or a lone
// sample's (float). ca: the cond phase's double scratch.
#pragma once
#include <vector>

#include "fastscore/likelihood.h"
#include "tile.h"

namespace fastscore {
namespace cpu {

template <class V>
struct OdeWorkspace {
  OdeWorkspace(const NetLayout& L, int nt)
      : a(L.lane_arena), dT((size_t)nt * L.lane_arena), dirs(nt * L.dim), s(L.dim), y(L.dim + 1), y1(L.dim + 1),
        y5(L.dim + 1), comp(1), K(kMaxStages * (L.dim + 1)), ta(L.time_arena), ca(L.cond_arena) {}
  std::vector<V> a, dT, dirs, s, y, y1, y5, comp, K;
  std::vector<typename TimePhase<V>::Lanes> ta;
  std::vector<double> ca;
  OdeBuffers<V> buffers() {
    return OdeBuffers<V>{a.data(),  dT.data(), dirs.data(), s.data(), y.data(),
                         y1.data(), y5.data(), comp.data(), K.data(), ta.data()};
  }
};

}  // namespace cpu
}  // namespace fastscore
