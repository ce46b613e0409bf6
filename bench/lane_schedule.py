"""The cpu backend's rk45 lane schedule (csrc/cpu/likelihood_cpu.cpp log_prob_refilled), replayed
from each point's evaluations: how much of a run's lane evaluations go to points, for the
peers bench's bound on what the tiles can gain."""

from __future__ import annotations

import heapq


def lane_occupancy(nfe: list[int], tile: int, threads: int) -> float:
    """The share of the lane evaluations that the cpu rk45 schedule spends on points: `threads`
    tiles of `tile` lanes, a lane taking the next point (in index order) as soon as its own is
    done; a tile steps until its busiest lane is done, and the threads at the same rate, so the
    run lasts as long as the busiest tile. nfe [n]: each point's evaluations. Below 1 only by the
    tail: the last points run in tiles with idle lanes."""
    lanes = [(0, lane) for lane in range(tile * threads)]  # (evaluations done, lane): a min-heap
    for cost in nfe:
        done, lane = heapq.heappop(lanes)
        heapq.heappush(lanes, (done + cost, lane))
    busiest = [0] * threads
    for done, lane in lanes:
        busiest[lane // tile] = max(busiest[lane // tile], done)
    return sum(nfe) / (max(busiest) * tile * threads)
