"""Network programs: the one form in which a score network reaches the kernels.

A user's network (fastscore/fx_import.py) or a ``ScoreMLP`` becomes a short program of
int32 rows over three scratch arenas, plus one float32 parameter buffer. Mirrored by
``csrc/include/fastscore/net.h``; every backend interprets it (the reference runs the
original module instead).

Phases, each a contiguous range of rows, run in this order:
  time  (double, one scalar per time value): the subgraph that depends on t alone (time
        features, time MLP, the parametrisation's per-time factors). For samplers it runs once
        per evaluation time, shared by every sample at that time; its exports are a table row.
  cond  (double, once per sample and trajectory): the subgraph on the condition alone.
  lane  (float32, per sample, every evaluation): everything that depends on x.
Arena layouts (offsets in values):
  time  [scratch | exports (n_texp)]
  cond  [condition (cond_dim) | scratch | exports (n_cexp)]
  lane  [x (dim) | time imports (n_texp) | cond imports (n_cexp) | scratch]
A phase's exports are its values that later phases read; the kernels copy them into the lane
arena's import region (time: each evaluation; cond: once per trajectory).

Row: [op, dst, a, b, n, p0, p1, p2, tangent]
  DENSE  dst[j] = init(j) + sum_k W[j, k] a[k], j < n; p0 = n_in, p1 = W's parameter offset
         (out-major [n, n_in]); p2 = INIT_NONE | INIT_PARAM (b: parameter offset) | INIT_ARENA
         (b: arena offset of an [n] vector)
  UNARY  dst[j] = f(a[j]), j < n; p0 = f (UNARY_FUNCTIONS), p1 = offset of f's parameters
  BINARY dst[j] = a[j] (op) b[j]; p0 = op (BINARY_FUNCTIONS); p1, p2 = operand modes a, b
         (MODE_*: an arena vector or broadcast scalar, a parameter vector or scalar)
  NORM   layer norm over a[0:n]; b = eps's parameter offset; p0, p1 = gamma, beta offsets (-1: none)
  SDE    (time phase) dst[0] = t, sigma(t) or alpha(t) of the program's SDE; p0 = SDE_FUNCTIONS
  COPY   dst[j] = a[j], j < n
tangent (lane phase): bit 0 set if operand a carries x-tangents, bit 1 for operand b; the
result carries tangents if either does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DENSE, UNARY, BINARY, NORM, SDE_OP, COPY = range(6)
OPCODES = {"DENSE": DENSE, "UNARY": UNARY, "BINARY": BINARY, "NORM": NORM, "SDE": SDE_OP, "COPY": COPY}
NET_OP_WIDTH = 9
INIT_NONE, INIT_PARAM, INIT_ARENA = range(3)
MODE_VECTOR, MODE_SCALAR, MODE_PARAM_VECTOR, MODE_PARAM_SCALAR = range(4)
#: f -> code; f's parameters in brackets (read from the parameter buffer)
UNARY_FUNCTIONS = {name: i for i, name in enumerate((
    "relu", "leaky_relu",  # [negative slope]
    "silu", "gelu", "gelu_tanh", "tanh", "sigmoid",
    "elu",  # [alpha]
    "softplus",  # [beta, threshold]
    "mish", "sin", "cos", "exp", "log", "sqrt", "neg", "reciprocal", "square"))}
UNARY_PARAMETERS = {"leaky_relu": 1, "elu": 1, "softplus": 2}
BINARY_FUNCTIONS = {"add": 0, "sub": 1, "mul": 2, "div": 3}
#: time-phase inputs: t itself, the marginal std sigma(t), the mean coefficient alpha(t)
SDE_FUNCTIONS = {"t": 0, "sigma": 1, "alpha": 2}
PHASES = ("time", "cond", "lane")


@dataclass(frozen=True)
class NetProgram:
    """A lowered network: ops int32 [n_ops, NET_OP_WIDTH] (time, cond, lane rows in order),
    params float32, and the arena layout the kernels size their buffers by."""

    ops: np.ndarray
    params: np.ndarray
    dim: int
    cond_dim: int
    n_time_ops: int
    n_cond_ops: int
    time_arena: int
    cond_arena: int
    lane_arena: int
    n_texp: int
    n_cexp: int
    out: int  # lane-arena offset of the score [dim]
    sde_kind: int  # the SDE the time phase's SDE rows read (-1: none needed)
    sde_params: tuple[float, float, float]
    flops_per_eval: int  # 2 x multiply-adds of the lane phase's dense rows

    @property
    def n_ops(self) -> int:
        return len(self.ops)

    @property
    def width(self) -> int:
        """The widest lane-phase dense layer (what the kernels' limits refer to)."""
        lane = self.ops[self.n_time_ops + self.n_cond_ops:]
        dense = lane[lane[:, 0] == DENSE]
        return int(max(dense[:, 4].max(initial=0), dense[:, 5].max(initial=0))) if len(dense) else self.dim

    def header(self) -> tuple:
        """The layout tuple the bindings take (csrc/bindings.cpp NetTuple)."""
        return (self.dim, self.cond_dim, self.n_time_ops, self.n_cond_ops, self.time_arena, self.cond_arena,
                self.lane_arena, self.n_texp, self.n_cexp, self.out, self.sde_kind, self.sde_params)


@dataclass(eq=False)
class Value:
    """A value of the program being built: n entries at `offset` of a region of its phase's
    arena (resolved to absolute offsets when the program is finished)."""

    phase: str
    region: str  # "x", "cond", "scratch", "exports", "timp", "cimp"
    offset: int
    n: int
    tangent: bool = False  # lane values: carries x-tangents
    buffer: "Buffer | None" = None  # scratch: the allocation it lives in

    def slice(self, start: int, n: int) -> "Value":
        return Value(self.phase, self.region, self.offset + start, n, self.tangent, self.buffer)


@dataclass(eq=False)
class Buffer:
    phase: str
    offset: int
    n: int


@dataclass(eq=False)
class _Op:
    row: list  # [op, dst, a, b, n, p0, p1, p2, tangent] with Values where offsets go
    phase: str


@dataclass
class Builder:
    """Builds a NetProgram: ops per phase, the parameter buffer, and each phase's scratch
    allocation (first fit, freed by the caller after a value's last use)."""

    dim: int
    cond_dim: int
    params: list = field(default_factory=list)
    ops: dict = field(default_factory=lambda: {p: [] for p in PHASES})
    scratch: dict = field(default_factory=lambda: {p: 0 for p in PHASES})
    exports: dict = field(default_factory=lambda: {"time": 0, "cond": 0})
    free: dict = field(default_factory=lambda: {p: [] for p in PHASES})  # scratch holes: [offset, n]
    high: dict = field(default_factory=lambda: {p: 0 for p in PHASES})  # scratch high-water marks
    exported: dict = field(default_factory=dict)  # (phase, region, buffer, offset, n) -> its import
    flops: int = 0
    uses_sde: bool = False
    _n_params: int = 0

    # -- values ---------------------------------------------------------------------

    def x(self) -> Value:
        return Value("lane", "x", 0, self.dim, tangent=True)

    def cond(self) -> Value:
        return Value("cond", "cond", 0, self.cond_dim)

    def new(self, phase: str, n: int, tangent: bool = False) -> Value:
        """n entries of the phase's scratch: the first free hole that fits, else the top."""
        for hole in self.free[phase]:
            if hole[1] >= n:
                buf = Buffer(phase, hole[0], n)
                hole[0] += n
                hole[1] -= n
                self.free[phase] = [h for h in self.free[phase] if h[1] > 0]
                return Value(phase, "scratch", buf.offset, n, tangent, buf)
        buf = Buffer(phase, self.scratch[phase], n)
        self.scratch[phase] += n
        self.high[phase] = max(self.high[phase], self.scratch[phase])
        return Value(phase, "scratch", buf.offset, n, tangent, buf)

    def release(self, buf: Buffer) -> None:
        """Returns a scratch buffer to its phase's free list (after its last reader was emitted:
        rows run in emission order within a phase, and every phase before the next)."""
        free = sorted(self.free[buf.phase] + [[buf.offset, buf.n]])
        merged = []
        for off, n in free:
            if merged and merged[-1][0] + merged[-1][1] == off:
                merged[-1][1] += n
            else:
                merged.append([off, n])
        if merged and merged[-1][0] + merged[-1][1] == self.scratch[buf.phase]:  # a hole at the top shrinks it
            self.scratch[buf.phase] = merged.pop()[0]
        self.free[buf.phase] = merged

    def param(self, values) -> int:
        """Offset of `values` (float64, rounded once to float32) in the parameter buffer."""
        a = np.asarray(values, dtype=np.float64).ravel()
        if not np.all(np.isfinite(a)):
            raise ValueError("the network has non-finite parameters; it cannot be run")
        off = self._n_params
        self.params.append(a)
        self._n_params += a.size
        return off

    def export(self, v: Value) -> Value:
        """The lane phase's view of a time or cond value (copied into the import region)."""
        if v.phase == "lane":
            return v
        key = (v.phase, v.region, v.buffer, v.offset, v.n)  # the buffer: scratch offsets are reused
        if key in self.exported:
            return self.exported[key]
        off = self.exports[v.phase]
        self.exports[v.phase] += v.n
        dst = Value(v.phase, "exports", off, v.n)
        self._emit(COPY, dst, v, None, v.n, 0, 0, 0, phase=v.phase)
        self.exported[key] = Value("lane", "timp" if v.phase == "time" else "cimp", off, v.n)
        return self.exported[key]

    # -- ops ------------------------------------------------------------------------

    def _emit(self, op, dst, a, b, n, p0, p1, p2, phase):
        """Appends a row; in the lane phase its tangent flags say which of a, b and dst carry
        x-tangents (netprog rows: [op, dst, a, b, n, p0, p1, p2, tangent])."""
        tangent = 0
        if phase == "lane":
            has = lambda v: isinstance(v, Value) and v.tangent
            tangent = int(has(a)) | 2 * int(has(b)) | 4 * int(has(dst))
        self.ops[phase].append(_Op([op, dst, a, b, n, p0, p1, p2, tangent], phase))

    def dense(self, phase: str, src: Value, weight: np.ndarray, init=None, dst: Value | None = None) -> Value:
        """dst = init + W src; init: None, a parameter vector (np array) or a Value (same phase)."""
        n_out, n_in = weight.shape
        assert n_in == src.n, (n_in, src.n)
        if dst is None:
            tangent = phase == "lane" and src.tangent
            dst = self.new(phase, n_out, tangent)
        if init is None:
            kind, b = INIT_NONE, 0
        elif isinstance(init, Value):
            kind, b = INIT_ARENA, init
        else:
            kind, b = INIT_PARAM, self.param(init)
        if phase == "lane":
            self.flops += 2 * n_out * n_in
        self._emit(DENSE, dst, src, b, n_out, n_in, self.param(weight), kind, phase)
        return dst

    def unary(self, phase: str, fn: str, src: Value, fparams=()) -> Value:
        dst = self.new(phase, src.n, src.tangent)
        p1 = self.param(fparams) if fparams else 0
        self._emit(UNARY, dst, src, None, src.n, UNARY_FUNCTIONS[fn], p1, 0, phase)
        return dst

    def binary(self, phase: str, fn: str, a, b, dst: Value | None = None) -> Value:
        """a (op) b; each operand a Value (vector, or [1] broadcast) or a constant array;
        into dst if given (a slice of a larger value), else a new value."""
        operands, modes, n = [], [], 1
        for v in (a, b):
            if isinstance(v, Value):
                modes.append(MODE_SCALAR if v.n == 1 else MODE_VECTOR)
                operands.append(v)
                n = max(n, v.n)
            else:
                c = np.asarray(v, dtype=np.float64).ravel()
                modes.append(MODE_PARAM_SCALAR if c.size == 1 else MODE_PARAM_VECTOR)
                operands.append(self.param(c))
                n = max(n, c.size)
        ta = isinstance(a, Value) and a.tangent
        tb = isinstance(b, Value) and b.tangent
        dst = self.new(phase, n, ta or tb) if dst is None else dst
        self._emit(BINARY, dst, operands[0], operands[1], n, BINARY_FUNCTIONS[fn], modes[0], modes[1], phase)
        return dst

    def norm(self, phase: str, src: Value, gamma, beta, eps: float) -> Value:
        dst = self.new(phase, src.n, src.tangent)
        g = -1 if gamma is None else self.param(gamma)
        b = -1 if beta is None else self.param(beta)
        self._emit(NORM, dst, src, self.param([eps]), src.n, g, b, 0, phase)
        return dst

    def sde(self, fn: str) -> Value:
        if fn != "t":
            self.uses_sde = True
        dst = self.new("time", 1)
        self._emit(SDE_OP, dst, None, None, 1, SDE_FUNCTIONS[fn], 0, 0, "time")
        return dst

    def copy(self, phase: str, src: Value, dst: Value) -> None:
        self._emit(COPY, dst, src, None, src.n, 0, 0, 0, phase)

    # -- the program ----------------------------------------------------------------

    def finish(self, out: Value, sde=None) -> NetProgram:
        if out.phase != "lane" or out.n != self.dim:
            raise ValueError(f"the network's output must depend on x and have {self.dim} entries per sample")
        n_texp, n_cexp = self.exports["time"], self.exports["cond"]
        base = {  # region -> absolute offset in its phase's arena
            ("time", "scratch"): 0, ("time", "exports"): self.high["time"],
            ("cond", "cond"): 0, ("cond", "scratch"): self.cond_dim,
            ("cond", "exports"): self.cond_dim + self.high["cond"],
            ("lane", "x"): 0, ("lane", "timp"): self.dim, ("lane", "cimp"): self.dim + n_texp,
            ("lane", "scratch"): self.dim + n_texp + n_cexp,
        }
        resolve = lambda v: v.offset + base[(v.phase, v.region)] if isinstance(v, Value) else (0 if v is None else v)
        rows = [[resolve(f) for f in op.row] for p in PHASES for op in self.ops[p]]
        ops = np.array(rows, dtype=np.int32).reshape(-1, NET_OP_WIDTH)
        params = np.concatenate(self.params) if self.params else np.zeros(0)
        if self.uses_sde and sde is None:
            raise ValueError("the network's parametrisation reads sigma(t) or alpha(t): give the SDE it was trained for")
        return NetProgram(
            ops=np.ascontiguousarray(ops), params=np.ascontiguousarray(params, dtype=np.float32), dim=self.dim,
            cond_dim=self.cond_dim, n_time_ops=len(self.ops["time"]), n_cond_ops=len(self.ops["cond"]),
            time_arena=self.high["time"] + n_texp, cond_arena=self.cond_dim + self.high["cond"] + n_cexp,
            lane_arena=self.dim + n_texp + n_cexp + self.high["lane"], n_texp=n_texp, n_cexp=n_cexp,
            out=resolve(out), sde_kind=-1 if sde is None else sde.kind,
            sde_params=(0.0, 0.0, 0.0) if sde is None else tuple(float(p) for p in sde.params),
            flops_per_eval=self.flops)
