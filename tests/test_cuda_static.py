"""Static checks of the CUDA kernels, no GPU needed: ptxas's resource report for every kernel
instantiation and every architecture the build ships machine code for (CMakeLists.txt).
Skipped where nvcc is missing."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BODY = (ROOT / "csrc/cuda/thread_body.h").read_text()
BLOCK = int(re.search(r"constexpr int kBlock = (\d+);", BODY).group(1))
MIN_BLOCKS = int(re.search(r"constexpr int kMinBlocks = (\d+);", BODY).group(1))
REGISTERS_PER_SM = 65536  # sm_80 and sm_90
ARCHS = ["sm_80", "sm_90"]
REGISTER_WIDTHS = [32, 64]  # instantiations whose activations must live in registers

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")


def ptxas_report(arch: str, out: Path) -> dict:
    """{function name: {"registers", "stack", "spill_stores", "spill_loads"}} from ptxas -v."""
    cmd = ["nvcc", "-std=c++17", "-O3", "--expt-relaxed-constexpr", f"-I{ROOT / 'csrc'}",
           f"-I{ROOT / 'csrc/include'}", "-cubin", f"-arch={arch}", "-Xptxas", "-v",
           "-o", str(out / f"kernels_{arch}.cubin"), str(ROOT / "csrc/cuda/kernels.cu")]
    log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    report, name = {}, None
    for line in log.splitlines():
        if m := re.search(r"Function properties for (\S+)", line):
            name = m.group(1)
            report[name] = {"registers": 0}
        elif m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line):
            report[name].update(stack=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
        elif m := re.search(r"Used (\d+) registers", line):
            report[name]["registers"] = int(m[1])
    return report


@pytest.fixture(scope="module", params=ARCHS)
def report(request, tmp_path_factory):
    return request.param, ptxas_report(request.param, tmp_path_factory.mktemp("ptxas"))


def kernels(report, kind):
    """{width template argument: resources} of the sample_kernel or log_prob_kernel entries"""
    found = {}
    for name, res in report.items():
        if m := re.search(kind + r"ILi(\d+)E", name):
            found[int(m[1])] = res
    return found


def test_every_instantiation_is_compiled(report):
    arch, rep = report
    for kind in ("sample_kernel", "log_prob_kernel"):
        assert sorted(kernels(rep, kind)) == [0, *REGISTER_WIDTHS], (arch, kind)


def test_no_spills_and_registers_within_the_occupancy_target(report):
    arch, rep = report
    for name, res in rep.items():
        assert res["spill_stores"] == 0 and res["spill_loads"] == 0, (arch, name, res)
    # kMinBlocks blocks of kBlock threads per SM must fit the register file
    for kind in ("sample_kernel", "log_prob_kernel"):
        for w, res in kernels(rep, kind).items():
            assert 0 < res["registers"] * BLOCK * MIN_BLOCKS <= REGISTERS_PER_SM, (arch, kind, w, res)


def test_sampler_activations_live_in_registers(report):
    """With a compile-time width the network's two activation arrays (2 x width floats) are
    not in local memory: the out-of-line forward pass has no stack frame and the sampler's
    frame does not grow with the width. The generic kernel's frame holds them (2 x 256
    floats), which shows that the report would see them (the test's power)."""
    arch, rep = report
    forward = {int(m[1]): res for name, res in rep.items() if (m := re.search(r"7forwardILi(\d+)E", name))}
    samplers = kernels(rep, "sample_kernel")
    for w in REGISTER_WIDTHS:
        assert forward[w]["stack"] == 0, (arch, w, forward[w])
        assert samplers[w]["stack"] == samplers[REGISTER_WIDTHS[0]]["stack"], (arch, samplers)
    assert samplers[0]["stack"] >= 2 * 256 * 4, (arch, samplers)
