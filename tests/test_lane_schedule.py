"""bench/lane_schedule.py: the replay of the cpu rk45 lane schedule behind the peers bench's
bound, on schedules small enough to count by hand."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from lane_schedule import lane_occupancy  # noqa: E402


def test_full_tiles_waste_nothing():
    assert lane_occupancy([7] * 64, tile=16, threads=2) == 1.0


def test_one_point_more_than_the_lanes_doubles_the_run():
    # 33 points of 5 on 32 lanes: lane 0 runs two points, its tile 10 evaluations long
    assert lane_occupancy([5] * 33, tile=16, threads=2) == pytest.approx(33 * 5 / (10 * 32))


def test_a_lane_refills_from_the_points_in_order():
    # 2 lanes: lane 0 takes 9, lane 1 takes 1 then 1 then 1 (free at 1, 2, 3): both done by 9
    assert lane_occupancy([9, 1, 1, 1], tile=2, threads=1) == pytest.approx(12 / 18)
    # in the other order the 9 starts at 1, after a point of 1 on its lane: the run takes 10
    assert lane_occupancy([1, 1, 9, 1], tile=2, threads=1) == pytest.approx(12 / 20)


def test_the_run_lasts_as_long_as_the_busiest_tile():
    # thread 0's lanes take 4 and 4, thread 1's take 1 and 1: the run is 4 evaluations on 4 lanes
    assert lane_occupancy([4, 4, 1, 1], tile=2, threads=2) == pytest.approx(10 / 16)
