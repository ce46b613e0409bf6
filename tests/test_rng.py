"""The shared Philox stream: known answers, distribution, addressing, and the C++ twin.

``fastscore/rng.py`` is the reference every backend must reproduce draw by draw;
``csrc/include/fastscore/philox.h`` is compiled here with g++ (and nvcc when
present) and held against it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fastscore import rng

REPO = Path(__file__).parents[1]
INCLUDE = REPO / "csrc" / "include"

# Random123 known-answer vectors for philox4x32-10: (counter, key, output).
KAT = [
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    (
        [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
        [0xA4093822, 0x299F31D0],
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
    ),
]


# -- Philox ------------------------------------------------------------------


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    out = rng.philox4x32_10(np.array(counter, np.uint32), np.array(key, np.uint32))
    assert out.dtype == np.uint32
    np.testing.assert_array_equal(out, np.array(expected, np.uint32))


def test_philox_broadcasts_and_matches_elementwise():
    counters = np.array([c for c, _, _ in KAT], np.uint32)
    keys = np.array([k for _, k, _ in KAT], np.uint32)
    expected = np.array([e for _, _, e in KAT], np.uint32)
    np.testing.assert_array_equal(rng.philox4x32_10(counters, keys), expected)
    # one key broadcast over a [2, 3, 4] batch of counters
    grid = np.arange(24, dtype=np.uint32).reshape(2, 3, 4)
    out = rng.philox4x32_10(grid, np.array([7, 9], np.uint32))
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out[1, 2], rng.philox4x32_10(grid[1, 2], [7, 9]))


def test_philox_rounds_is_one_function_for_numpy_and_numba():
    """The rounds the Numba kernels compile are rng.philox_rounds itself: on scalars, compiled
    by numba as it stands, they give the known answers and the numpy path's words."""
    numba = pytest.importorskip("numba")
    compiled = numba.njit(rng.philox_rounds)
    words = np.random.default_rng(0).integers(0, 2**32, size=(50, 6), dtype=np.uint64)
    words[:len(KAT)] = [[*c, *k] for c, k, _ in KAT]
    vectorised = rng.philox_rounds(*words.T)
    for i, w in enumerate(words):
        got = compiled(*(np.uint64(v) for v in w))
        np.testing.assert_array_equal(np.array(got, np.uint64), [v[i] for v in vectorised])
    np.testing.assert_array_equal(np.stack(vectorised, 1)[:len(KAT)], [e for _, _, e in KAT])


def test_stream_constants():
    assert (rng.STREAM_PRIOR, rng.STREAM_PREDICTOR, rng.STREAM_PROBE, rng.STREAM_CORRECTOR) == (
        0,
        1,
        2,
        16,
    )


def test_normals_follow_the_documented_addressing():
    """Recompute draws 0..7 of one address by hand from philox4x32_10."""
    seed, sample, step, stream = 0x0123456789ABCDEF, 77, 5, rng.STREAM_CORRECTOR + 3
    key = np.array([seed & 0xFFFFFFFF, seed >> 32], np.uint32)
    expected = []
    for block in range(2):
        x = rng.philox4x32_10(np.array([sample, step, block, stream], np.uint32), key)
        x = x.astype(np.float64)
        for a, b in ((x[0], x[1]), (x[2], x[3])):
            u_open = (np.floor(a / 256) + 1) * 2.0**-24
            u_half = np.floor(b / 256) * 2.0**-24
            r = np.sqrt(-2 * np.log(u_open))
            expected += [r * np.cos(2 * np.pi * u_half), r * np.sin(2 * np.pi * u_half)]
    z = rng.normals(seed, [sample], step, stream, 8)
    np.testing.assert_allclose(z[0], expected, rtol=1e-14, atol=1e-15)


# -- normals -------------------------------------------------------------------


def test_normals_shapes():
    samples = np.array([3, 1, 4, 1, 5])
    z = rng.normals(0, samples, 2, rng.STREAM_PREDICTOR, 3)
    assert z.shape == (5, 3) and z.dtype == np.float64
    z = rng.normals(0, samples, np.array([0, 2, 9]), rng.STREAM_PREDICTOR, 3)
    assert z.shape == (3, 5, 3) and z.dtype == np.float64
    assert rng.normals(0, samples, np.int64(2), 1, 3).shape == (5, 3)
    assert rng.normals(0, samples, [7], 1, 3).shape == (1, 5, 3)
    assert rng.normals(0, np.array([], np.int64), 0, 1, 2).shape == (0, 2)
    # steps given as an array: row s equals the int-step call for steps[s]
    zs = rng.normals(11, samples, [0, 2, 9], 1, 6)
    for s, k in enumerate([0, 2, 9]):
        np.testing.assert_array_equal(zs[s], rng.normals(11, samples, k, 1, 6))
    # the same sample index twice gives the same row
    np.testing.assert_array_equal(zs[:, 1], zs[:, 3])


@pytest.fixture(scope="module")
def big_sample():
    # 125000 samples x 8 dims = 10^6 draws, across two blocks per sample
    return rng.normals(2024, np.arange(125_000), 3, rng.STREAM_PREDICTOR, 8)


def test_normals_moments(big_sample):
    z = big_sample.ravel()
    n = z.size
    # standard errors: mean 1/sqrt(n) = 1e-3, variance sqrt(2/n) ~ 1.4e-3
    assert abs(z.mean()) < 5e-3
    assert abs(z.var() - 1.0) < 7e-3
    assert abs(stats.skew(z)) < 5 * np.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < 5 * np.sqrt(24 / n)
    # every lane of the block is N(0, 1) on its own (cos and sin halves, both pairs)
    for lane in range(8):
        col = big_sample[:, lane]
        assert abs(col.mean()) < 5 / np.sqrt(col.size)
        assert abs(col.var() - 1.0) < 5 * np.sqrt(2 / col.size)


KS_P_MIN = 1e-3


def test_normals_ks(big_sample):
    z = big_sample.ravel()
    assert stats.kstest(z, stats.norm.cdf).pvalue > KS_P_MIN
    # The threshold has teeth: a 2% scale error or a transform that uses only
    # the cosine half with a wrong angle range fails it at 10^6 draws.
    assert stats.kstest(1.02 * z, stats.norm.cdf).pvalue < KS_P_MIN
    assert stats.kstest(np.abs(z), stats.norm.cdf).pvalue < KS_P_MIN


def test_normals_pairs_uncorrelated(big_sample):
    # Box-Muller pairs (z0, z1) share r; they must still be uncorrelated, as
    # must the two pairs of a block and neighbouring blocks.
    c = np.corrcoef(big_sample, rowvar=False)
    off = c[~np.eye(8, dtype=bool)]
    assert np.max(np.abs(off)) < 5 / np.sqrt(big_sample.shape[0])
    # z0^2 and z1^2 are independent for true Box-Muller (equal r would correlate them)
    c2 = np.corrcoef(big_sample[:, 0] ** 2, big_sample[:, 1] ** 2)[0, 1]
    assert abs(c2) < 5 / np.sqrt(big_sample.shape[0])


def test_different_addresses_give_different_numbers():
    samples = np.arange(64)
    base = rng.normals(5, samples, 3, rng.STREAM_PREDICTOR, 4)
    others = {
        "seed": rng.normals(6, samples, 3, rng.STREAM_PREDICTOR, 4),
        "seed high word": rng.normals(5 + (1 << 32), samples, 3, rng.STREAM_PREDICTOR, 4),
        "step": rng.normals(5, samples, 4, rng.STREAM_PREDICTOR, 4),
        "stream prior": rng.normals(5, samples, 3, rng.STREAM_PRIOR, 4),
        "stream probe": rng.normals(5, samples, 3, rng.STREAM_PROBE, 4),
        "corrector 0": rng.normals(5, samples, 3, rng.STREAM_CORRECTOR, 4),
        "corrector 1": rng.normals(5, samples, 3, rng.STREAM_CORRECTOR + 1, 4),
        "samples": rng.normals(5, samples + 64, 3, rng.STREAM_PREDICTOR, 4),
    }
    for name, z in others.items():
        assert not np.any(np.isclose(z, base, rtol=0, atol=1e-12)), name
        corr = np.corrcoef(z.ravel(), base.ravel())[0, 1]
        assert abs(corr) < 0.25, name
    # different samples / steps within one call differ too
    zs = rng.normals(5, samples, np.arange(8), rng.STREAM_PREDICTOR, 4)
    flat = zs.reshape(-1, 4)
    assert np.unique(flat[:, 0]).size == flat.shape[0]


def test_batch_independence():
    """A sample's numbers do not depend on which other samples share the batch."""
    everything = rng.normals(42, np.arange(20), np.arange(3), rng.STREAM_PREDICTOR, 5)
    subset = rng.normals(42, np.array([5, 9]), np.arange(3), rng.STREAM_PREDICTOR, 5)
    np.testing.assert_array_equal(subset, everything[:, [5, 9]])
    # split into two batches in any order
    a = rng.normals(42, np.arange(10, 20), 1, rng.STREAM_PREDICTOR, 5)
    b = rng.normals(42, np.arange(10)[::-1], 1, rng.STREAM_PREDICTOR, 5)
    np.testing.assert_array_equal(np.concatenate([b[::-1], a]), everything[1])


@pytest.mark.parametrize("dim", [1, 2, 3, 5, 6, 7])
def test_dim_is_a_prefix(dim):
    samples = np.array([0, 17, 4_000_000_000])
    big = rng.normals(9, samples, [0, 1], rng.STREAM_PRIOR, 12)
    small = rng.normals(9, samples, [0, 1], rng.STREAM_PRIOR, dim)
    np.testing.assert_array_equal(small, big[..., :dim])
    assert small.flags.c_contiguous
    rbig = rng.rademacher(9, samples, [0, 1], 12)
    np.testing.assert_array_equal(rng.rademacher(9, samples, [0, 1], dim), rbig[..., :dim])


# -- rademacher ------------------------------------------------------------------


def test_rademacher():
    r = rng.rademacher(3, np.arange(50_000), 7, 4)
    assert r.shape == (50_000, 4) and r.dtype == np.float64
    assert set(np.unique(r)) == {-1.0, 1.0}
    assert abs(r.mean()) < 5 / np.sqrt(r.size)
    for lane in range(4):
        assert abs(r[:, lane].mean()) < 5 / np.sqrt(r.shape[0])
    c = np.corrcoef(r, rowvar=False)
    assert np.max(np.abs(c[~np.eye(4, dtype=bool)])) < 5 / np.sqrt(r.shape[0])
    assert rng.rademacher(3, np.arange(4), [0, 1, 2], 3).shape == (3, 4, 3)


def test_rademacher_uses_top_bit_of_probe_stream():
    seed, sample, step = (1 << 63) + 12345, 8, 2
    key = np.array([seed & 0xFFFFFFFF, seed >> 32], np.uint32)
    x = rng.philox4x32_10(np.array([sample, step, 0, rng.STREAM_PROBE], np.uint32), key)
    expected = np.where(x >> 31 == 0, 1.0, -1.0)
    np.testing.assert_array_equal(rng.rademacher(seed, [sample], step, 4)[0], expected)


# -- validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(seed=-1), "seed"),
        (dict(seed=1 << 64), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(samples=np.array([3, -1])), "samples"),
        (dict(samples=np.array([1 << 32])), "samples"),
        (dict(samples=np.array([[1, 2]])), "samples"),
        (dict(samples=np.array([0.5])), "samples"),
        (dict(dim=0), "dim"),
        (dict(dim=-3), "dim"),
        (dict(steps=-1), "steps"),
        (dict(steps=np.array([0, -2])), "steps"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = dict(seed=0, samples=np.arange(4), steps=0, dim=2) | kwargs
    with pytest.raises(ValueError, match=match):
        rng.normals(stream=rng.STREAM_PREDICTOR, **args)
    with pytest.raises(ValueError, match=match):
        rng.rademacher(**args)


def test_extreme_but_valid_addresses():
    z = rng.normals((1 << 64) - 1, np.array([0, (1 << 32) - 1]), (1 << 32) - 1, 0xFFFFFFFF, 3)
    assert z.shape == (2, 3) and np.all(np.isfinite(z))


# -- the C++ header against the reference ---------------------------------------

# (seed, sample, step, stream) addresses for the compiled check, dim = 7
ADDRESSES = [
    (0, 0, 0, rng.STREAM_PRIOR),
    (1, 5, 3, rng.STREAM_PREDICTOR),
    (0x0123456789ABCDEF, 4_000_000_000, 1023, rng.STREAM_CORRECTOR + 2),
    ((1 << 64) - 1, (1 << 32) - 1, (1 << 32) - 1, rng.STREAM_PROBE),
]
DIM = 7

CPP_MAIN = r"""
#include <cstdio>
#include <cinttypes>
#include "fastscore/normals.h"

int main() {
  using namespace fastscore;
  const uint32_t kat[3][6] = {
%(kat)s
  };
  for (int t = 0; t < 3; ++t) {
    uint32_t out[4];
    philox4x32_10(kat[t], kat[t] + 4, out);
    std::printf("kat %%08x %%08x %%08x %%08x\n", out[0], out[1], out[2], out[3]);
  }
  const uint64_t addr[%(n)d][4] = {
%(addr)s
  };
  for (int a = 0; a < %(n)d; ++a) {
    double zd[%(dim)d];
    float zf[%(dim)d];
    double rd[%(dim)d];
    draw_normals(addr[a][0], (uint32_t)addr[a][1], (uint32_t)addr[a][2],
                         (uint32_t)addr[a][3], %(dim)d, zd);
    draw_normals_float(addr[a][0], (uint32_t)addr[a][1], (uint32_t)addr[a][2],
                       (uint32_t)addr[a][3], %(dim)d, zf);
    draw_rademacher<double>(addr[a][0], (uint32_t)addr[a][1], (uint32_t)addr[a][2], %(dim)d, rd);
    std::printf("double");
    for (int d = 0; d < %(dim)d; ++d) std::printf(" %%.17g", zd[d]);
    std::printf("\nfloat");
    for (int d = 0; d < %(dim)d; ++d) std::printf(" %%.9g", (double)zf[d]);
    std::printf("\nrademacher");
    for (int d = 0; d < %(dim)d; ++d) std::printf(" %%g", rd[d]);
    std::printf("\n");
  }
  return 0;
}
"""

CUDA_KERNEL = r"""
#include "fastscore/normals.h"

__global__ void draw(uint64_t seed, int n, float* z, double* r) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  fastscore::draw_normals_float(seed, (uint32_t)i, 0u, fastscore::kStreamPredictor, 7, z + 7 * i);
  fastscore::draw_rademacher<double>(seed, (uint32_t)i, 0u, 3, r + 3 * i);
}
"""


def _cpp_source() -> str:
    kat = ",\n".join(
        "    {" + ", ".join(f"0x{w:08x}u" for w in c + k) + "}" for c, k, _ in KAT
    )
    addr = ",\n".join(
        "    {" + ", ".join(f"{v}ull" for v in a) + "}" for a in ADDRESSES
    )
    return CPP_MAIN % dict(kat=kat, addr=addr, n=len(ADDRESSES), dim=DIM)


def test_header_matches_numpy_reference(tmp_path):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found")
    src = tmp_path / "philox_check.cpp"
    exe = tmp_path / "philox_check"
    src.write_text(_cpp_source())
    cmd = [gxx, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(INCLUDE)]
    cmd += [str(src), "-o", str(exe)]
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    ran = subprocess.run([str(exe)], capture_output=True, text=True, check=True)
    lines = ran.stdout.splitlines()

    kat_lines = [ln.split()[1:] for ln in lines if ln.startswith("kat")]
    assert [[int(w, 16) for w in ln] for ln in kat_lines] == [e for _, _, e in KAT]

    rows = {kind: [] for kind in ("double", "float", "rademacher")}
    for ln in lines:
        kind, *vals = ln.split()
        if kind in rows:
            rows[kind].append([float(v) for v in vals])
    assert all(len(v) == len(ADDRESSES) for v in rows.values())

    for a, (seed, sample, step, stream) in enumerate(ADDRESSES):
        ref = rng.normals(seed, np.array([sample]), step, stream, DIM)[0]
        # double: same uniforms, libm vs numpy log/cos/sin differ by an ulp or so
        np.testing.assert_allclose(rows["double"][a], ref, rtol=1e-12, atol=1e-14)
        # float (normals.h, the samplers' draws): the same exact 24-bit uniforms, each normal
        # within 4.6 u of its exact value relative to itself (printed to 9 digits: + 1 u)
        np.testing.assert_allclose(rows["float"][a], ref, rtol=5.6 * 2.0**-24, atol=1e-12)  # cos(pi / 2) in double: 6e-17
        np.testing.assert_array_equal(
            rows["rademacher"][a], rng.rademacher(seed, np.array([sample]), step, DIM)[0]
        )


def _find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    default = "/usr/local/cuda/bin/nvcc"
    return default if os.access(default, os.X_OK) else None


def test_header_compiles_for_cuda_device(tmp_path):
    nvcc = _find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    src = tmp_path / "philox_kernel.cu"
    src.write_text(CUDA_KERNEL)
    cmd = [nvcc, "-x", "cu", "-std=c++17", "-arch=sm_80", "-I", str(INCLUDE), "-c", str(src)]
    cmd += ["-o", str(tmp_path / "philox_kernel.o")]
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
