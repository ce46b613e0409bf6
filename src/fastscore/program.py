"""Step programs: the one form in which every backend runs a sampler.

A sampler rule (``fastscore/samplers.py``) writes one step of its method as a short program
over a few per-sample registers, each a vector of ``dim`` values; register ``x`` is the state
the trajectory carries. Every backend interprets the same program: the torch reference
(``backends/reference.py``) in the model's dtype, the C++ and CUDA kernels
(``csrc/include/fastscore/program.h``) and the Numba driver in float32 lanes. Three
operations:

    Eval(dst, src, at=i)     dst <- s_theta(src, t), t = t_k - c_i h with c_i = rule.times[i]
    Draw(dst, stream)        dst <- the sample's standard normals at (step k, stream) (rng.py)
    Lin(dst, r0="a", ...)    dst <- a * r0 + ...: 1 to MAX_TERMS registers, each times a named
                             coefficient of the step (rule.coefficients)

Coefficients are formed in float64 for every step at once and rounded once into the table the
kernels read; a program never computes a coefficient itself. That is what makes one rule serve
every backend: adding a method adds a rule, not a kernel.

Encoding (the int32 rows the kernels read, ``OP_WIDTH`` columns):

    Eval  [EVAL, dst, src, slot, -1, -1, ...]
    Draw  [DRAW, dst, stream, 0, -1, -1, ...]
    Lin   [LIN,  dst, n_terms, 0, r0, c0, r1, c1, r2, c2, r3, c3]   unused terms: -1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

EVAL, DRAW, LIN = 0, 1, 2  # opcodes, fastscore::OpCode in program.h
OP_WIDTH = 12
MAX_TERMS = 4
MAX_REGISTERS = 8  # program.h kMaxRegisters: the kernels' per-sample register file
STATE = "x"  # register 0: what a step starts from and ends with


@dataclass(frozen=True)
class Eval:
    dst: str
    src: str
    at: int = 0  # index into the rule's evaluation times


@dataclass(frozen=True)
class Draw:
    dst: str
    stream: int


@dataclass(frozen=True)
class Lin:
    dst: str
    terms: tuple[tuple[str, str], ...]  # (register, coefficient name) pairs

    def __init__(self, dst: str, **terms: str):
        object.__setattr__(self, "dst", dst)
        object.__setattr__(self, "terms", tuple(terms.items()))


Op = Eval | Draw | Lin


@dataclass(frozen=True)
class Program:
    """A compiled program: the body runs once per step k (coefficient row k, evaluation rows
    k * n_slots + slot), the final part once after the last step (row ``steps``; it may not
    draw noise). Register and coefficient names index ``registers`` and ``coefficients``."""

    body: tuple[Op, ...]
    final: tuple[Op, ...]
    registers: tuple[str, ...]
    coefficients: tuple[str, ...]
    n_slots: int
    ops: np.ndarray  # int32 [len(body) + len(final), OP_WIDTH]

    @property
    def n_body(self) -> int:
        return len(self.body)

    @property
    def streams(self) -> tuple[int, ...]:
        """The noise streams a step draws from (the program's declaration of them)."""
        return tuple(sorted({op.stream for op in self.body if isinstance(op, Draw)}))

    @property
    def evals_per_step(self) -> int:
        return sum(isinstance(op, Eval) for op in self.body)


def _reads(op: Op) -> list[str]:
    if isinstance(op, Eval):
        return [op.src]
    if isinstance(op, Lin):
        return [r for r, _ in op.terms]
    return []


def compile_program(body: Sequence[Op], final: Sequence[Op], n_slots: int, carries: Sequence[str] = ()) -> Program:
    """Check a rule's program and encode it. Within a step a register must be written before it
    is read, except the state and the registers the rule carries from step to step (its
    multistep history, zero before the first step)."""
    registers, coefficients = [STATE, *carries], []
    rows = []

    def index(name: str, table: list) -> int:
        if name not in table:
            table.append(name)
        return table.index(name)

    for part, ops in (("body", body), ("final", final)):
        written = {STATE, *carries}
        for op in ops:
            for r in _reads(op):
                if r not in written:
                    raise ValueError(f"step program ({part}): register {r!r} is read before it is written in {op}")
            row = [-1] * OP_WIDTH
            if isinstance(op, Eval):
                if not 0 <= op.at < n_slots:
                    raise ValueError(f"step program: {op} evaluates at time slot {op.at}; the rule has {n_slots}")
                row[:4] = [EVAL, 0, index(op.src, registers), op.at]
            elif isinstance(op, Draw):
                if part == "final":
                    raise ValueError(f"step program: the final part may not draw noise ({op})")
                row[:4] = [DRAW, 0, op.stream, 0]
            elif isinstance(op, Lin):
                if not 1 <= len(op.terms) <= MAX_TERMS:
                    raise ValueError(f"step program: {op} has {len(op.terms)} terms; 1 to {MAX_TERMS} allowed")
                row[:4] = [LIN, 0, len(op.terms), 0]
                for j, (r, c) in enumerate(op.terms):
                    row[4 + 2 * j : 6 + 2 * j] = [index(r, registers), index(c, coefficients)]
            else:
                raise TypeError(f"step program: unknown operation {op!r}")
            row[1] = index(op.dst, registers)
            written.add(op.dst)
            rows.append(row)
    if len(registers) > MAX_REGISTERS:
        raise ValueError(f"step program uses {len(registers)} registers; the kernels hold {MAX_REGISTERS}")
    ops = np.array(rows, dtype=np.int32).reshape(-1, OP_WIDTH)
    return Program(tuple(body), tuple(final), tuple(registers), tuple(coefficients), n_slots, ops)


def execute(ops: Sequence[Op], regs: dict, coef: Callable[[str], object], evaluate: Callable[[object, int], object],
            draw: Callable[[int], object]) -> None:
    """Run ops on the registers `regs` (name -> array) in place: the readable interpreter the
    reference backend uses (program.h's ``run_ops`` is its kernel twin). evaluate(src, slot)
    is the network at the slot's time, draw(stream) the step's normals, coef(name) a
    coefficient of the step."""
    for op in ops:
        if isinstance(op, Eval):
            regs[op.dst] = evaluate(regs[op.src], op.at)
        elif isinstance(op, Draw):
            regs[op.dst] = draw(op.stream)
        else:
            acc = None
            for r, c in op.terms:
                term = coef(c) * regs[r]
                acc = term if acc is None else acc + term
            regs[op.dst] = acc
