"""What a native backend declares it runs (see ``fastscore.backends.resolve``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..program import DRAW, EVAL, LIN

OP_NAMES = {EVAL: "Eval", DRAW: "Draw", LIN: "Lin"}


@dataclass(frozen=True)
class Declares:
    ops: frozenset  # step-program opcodes its sampler interprets (fastscore/program.py)
    max_registers: int  # per-sample registers of its interpreter
    log_prob: frozenset  # likelihood methods
    traces: frozenset  # trace estimators of the likelihood
    adaptive: frozenset = frozenset()  # per-sample adaptive samplers (plan.ADAPTIVE_METHODS)
    max_dim: int | None = None
    max_lane_arena: int | None = None  # per-sample scratch of the network program (netprog.py)
    max_time_arena: int | None = None  # time- and cond-phase scratch

    def refuses(self, name: str, task: str, method: str, packed, program=None, trace=None) -> str | None:
        """Why this backend (called `name`) does not run the request, or None."""
        for what, value, limit in (("dim", packed.dim, self.max_dim),
                                   ("a per-sample arena of", packed.lane_arena, self.max_lane_arena),
                                   ("a time arena of", packed.time_arena, self.max_time_arena),
                                   ("a cond arena of", packed.cond_arena, self.max_time_arena)):
            if limit is not None and value > limit:
                return f"the model has {what} {value}; backend {name!r} declares {what} <= {limit}"
        if task == "sample" and program is None:  # an adaptive sampler
            if method not in self.adaptive:
                return f"sampler {method!r} is not declared by backend {name!r}"
            return None
        if task == "sample":
            used = {int(op) for op in np.unique(program.ops[:, 0])}
            missing = sorted(OP_NAMES.get(op, str(op)) for op in used - self.ops)
            if missing:
                return f"sampler {method!r} uses step operations {missing}, which backend {name!r} does not declare"
            if len(program.registers) > self.max_registers:
                return (f"sampler {method!r} uses {len(program.registers)} registers; backend {name!r} declares "
                        f"{self.max_registers}")
            return None
        if method not in self.log_prob:
            return f"log_prob method {method!r} is not declared by backend {name!r} (it runs {sorted(self.log_prob)})"
        if trace not in self.traces:
            return f"trace {trace!r} is not declared by backend {name!r} (it runs {sorted(self.traces)})"
        return None
