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
HEADERS = BODY + "".join((ROOT / "csrc/include/fastscore" / h).read_text() for h in ("program.h", "ode.h"))


def constant(name: str) -> int:
    return int(re.search(rf"constexpr int {name} = (\d+);", HEADERS).group(1))


BLOCK, MIN_BLOCKS = constant("kBlock"), constant("kMinBlocks")
DIM, ARENA, TIME_ARENA = constant("kMaxDim"), constant("kMaxArena"), constant("kMaxTimeArena")
REGS, STAGES = constant("kMaxRegisters"), constant("kMaxStages")
# bytes of the per-thread arrays thread_body.h declares (sample_thread, log_prob_thread, adaptive_thread)
DECLARED = {
    "sample_kernel": 4 * (REGS * DIM + ARENA) + 8 * TIME_ARENA + 8 * REGS,  # registers, arena, cond arena, pointers
    "log_prob_kernel": 4 * (ARENA + DIM * ARENA + DIM * DIM + DIM + 3 * (DIM + 1) + 1 + STAGES * (DIM + 1))
    + 8 * TIME_ARENA,  # arena, tangents, directions, score, y y1 y5, Kahan term, stages; time arena
    "adaptive_kernel": 4 * (ARENA + DIM + 3 * (DIM + 1) + 1 + STAGES * (DIM + 1))
    + 8 * (TIME_ARENA + 5 * DIM + DIM),  # as log_prob_kernel without tangents; Brownian values, prior normals
}
FRAME_SLACK = 2048  # scalars and call frames beside the arrays
REGISTERS_PER_SM = 65536  # sm_80 and sm_90
ARCHS = ["sm_80", "sm_90"]

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


def kernel(report, kind) -> dict:
    """The resources of a kernel entry (sample_kernel, log_prob_kernel, adaptive_kernel)."""
    (res,) = [res for name, res in report.items() if re.search(kind + r"E", name)]
    return res


def test_every_kernel_is_compiled_without_spills_within_the_occupancy_target(report):
    arch, rep = report
    for name, res in rep.items():
        assert res["spill_stores"] == 0 and res["spill_loads"] == 0, (arch, name, res)
    # kMinBlocks blocks of kBlock threads per SM must fit the register file
    for kind in DECLARED:
        res = kernel(rep, kind)
        assert 0 < res["registers"] * BLOCK * MIN_BLOCKS <= REGISTERS_PER_SM, (arch, kind, res)


def test_per_thread_memory_is_the_declared_arrays(report):
    """Each kernel's stack frame holds the per-thread arrays thread_body.h sizes by kMaxDim,
    kMaxArena and kMaxTimeArena (the limits fastscore/backends/cuda.py declares), and little
    else: a copy of an arena or a tangent buffer would add kilobytes and fail here."""
    arch, rep = report
    for kind, declared in DECLARED.items():
        stack = kernel(rep, kind)["stack"]
        assert declared <= stack <= declared + FRAME_SLACK, (arch, kind, stack, declared)
