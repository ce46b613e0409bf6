"""``fastscore.sample`` and ``fastscore.Sampler``: the public front-ends of every sampler."""

from __future__ import annotations

import copy

import numpy as np
import torch

from .backends import prepare_sample, resolve
from .chunks import destination, first_chunk, least_chunk, run_chunks, store
from .nn import pack
from .plan import (ADAPTIVE_METHODS, MAX_INDEX, check_cond, check_finite_result, check_int, check_seed,
                   make_adaptive_plan, make_sample_plan, model_cond_dim)
from .prepared import cached

ADAPTIVE_INFO = ("nfe", "accepted", "rejected")  # per-sample counts of the adaptive methods
ADAPTIVE_GUESSED_NFE = 200  # to size a first chunk before an adaptive run has measured its rate
from .sde import SDE


def sample(
    model: torch.nn.Module,
    sde: SDE,
    n: int,
    method: str = "em",
    steps: int = 1000,
    backend: str = "auto",
    seed: int = 0,
    eps: float = 1e-3,
    *,
    snr: float = 0.16,
    corrector_steps: int = 1,
    denoise: bool = False,
    start: int = 0,
    cond=None,
    grid: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    return_info: bool = False,
    out=None,
    progress: bool | None = None,
    callback=None,
):
    """Draw n samples [n, dim] from the reverse of `sde` with the score network `model`.

    Args:
        method: a rule of ``fastscore.samplers.RULES``: "em" (reverse-SDE Euler–Maruyama),
            "pc" (reverse-diffusion predictor + Langevin corrector, Song et al. 2021), "ald"
            (annealed Langevin dynamics, Song & Ermon 2019), "ode_euler" or "ode_heun"
            (probability-flow ODE in t), "dpmpp_2m" (DPM-Solver++(2M), Lu et al. 2022),
            "dpmpp_2m_sde" (its SDE variant), "edm_heun" (Heun in sigma / m, Karras et al.
            2022, Algorithm 1).
        steps: steps from T down to eps.
        grid: the time grid T = t_0 > ... > t_steps = eps (fastscore/grids.py): "uniform" in t,
            "logsnr" (uniform in log(m / sigma)) or "karras" (rho = 7); None: the method's own
            (dpmpp_*: logsnr, edm_heun: karras, the others: uniform).

    Per-sample adaptive methods (no grid; `steps` is not used): "ode_rk45" (Dormand–Prince
    5(4) on the probability flow, the controller of log_prob's rk45) and "em_adaptive"
    (Jolicoeur-Martineau et al. 2021, "Gotta Go Fast": Euler–Maruyama with an improved-Euler
    error estimate). Each sample controls its own step, so one hard sample does not slow the
    batch, and its noise comes from its own Brownian tree on the Philox stream
    (``rng.brownian``: a function of seed, sample index and time), so a sample is the same
    in any batch. rtol, atol: their tolerances (None: DEFAULT_TOLERANCES in plan.py).
        backend: "auto" (fastest available), "cpu", "cuda", "numba" or "torch" (reference).
        seed: seed of the shared Philox stream: sample i depends only on (seed, i, plan).
        eps: end time; sampling stops at t = eps > 0.
        snr, corrector_steps: Langevin steps of "pc" and "ald" (score_sde's defaults; "ald"
            needs corrector_steps >= 1).
        denoise: finish with the noise-free Tweedie step E[x_0 | x_eps].
        start: index of the first sample in the stream, to split one run across calls or
            machines (sample(n=a, start=0) then sample(n=b, start=a) equals one run of a + b).
        cond: for a conditional model, the condition of each sample [n, cond_dim] (amortised
            posterior sampling for n observations) or one [cond_dim] for all; sample i with
            cond[i] is the sample a run of one condition gives at the same index.
        return_info: also return {"nfe": network evaluations per sample [n] (int64)}; adaptive
            methods add "accepted" and "rejected" steps per sample.
        out: write the samples into a torch tensor or numpy array [n, dim] (a np.memmap too), or
            a new memory-mapped ``.npy`` file at this path, and return it: n beyond RAM works.
            Whether they fit is checked before any work starts.
        progress: True / False force or silence a tqdm bar; None shows it for runs expected to
            take longer than ~2 s. callback: callback(done, n) after each chunk.

    Large n runs in chunks of sample indices (``fastscore.chunks``), the same samples as one
    call; Ctrl-C stops it within about a second.

    Raises FloatingPointError if a trajectory blew up (a sample is not finite), naming the
    count and the first such sample, on every backend.
    """
    prepared = cached(model, ("sample", sde, method, steps, backend, eps, snr, corrector_steps, denoise, grid, rtol,
                              atol),
                      lambda: Sampler(model, sde, method, steps, backend, eps, snr=snr, corrector_steps=corrector_steps,
                                      denoise=denoise, grid=grid, rtol=rtol, atol=atol))
    return prepared(n, seed, start=start, cond=cond, return_info=return_info, out=out, progress=progress,
                    callback=callback)


class Sampler:
    """A sampling request prepared once: ``s = fs.Sampler(model, sde, method, steps, ...)``
    checks the request, packs the network, plans the grid and coefficient tables and picks
    the backend; ``s(n, seed=..., start=..., cond=...)`` then draws samples exactly as
    ``fs.sample`` with the same arguments would, paying only the kernel and a few
    microseconds of checks (a control loop asking for one sample at a time).

    The arguments are ``fs.sample``'s. On the kernel backends the sampler holds the network as
    it was when made (a copy): after training the model further, make a new one (``fs.sample``
    notices changed weights by itself); the reference backend ("torch") runs the module itself.
    ``s.backend`` is the backend it runs on; ``s.nfe`` the network evaluations per sample (None
    for the adaptive methods, whose count varies per sample).
    """

    def __init__(self, model: torch.nn.Module, sde: SDE, method: str = "em", steps: int = 1000, backend: str = "auto",
                 eps: float = 1e-3, *, snr: float = 0.16, corrector_steps: int = 1, denoise: bool = False,
                 grid: str | None = None, rtol: float | None = None, atol: float | None = None):
        if method in ADAPTIVE_METHODS:
            if grid is not None:
                raise ValueError(f"{method!r} chooses its own steps per sample; it takes no grid")
            plan = make_adaptive_plan(model, sde, 0, method, eps, 0, 0, rtol, atol, denoise)
            name = resolve(backend, "sample", plan.method, model)
            self.nfe = None
        else:
            if rtol is not None or atol is not None:
                raise ValueError(f"rtol and atol set the adaptive methods ({', '.join(ADAPTIVE_METHODS)}); "
                                 f"{method!r} takes steps")
            plan = make_sample_plan(model, sde, 0, method, steps, eps, 0, 0, snr, corrector_steps, denoise, grid)
            name = resolve(backend, "sample", plan.method, model, program=plan.program)
            if name != "torch":
                plan = plan.for_kernels(pack(model))
            self.nfe = plan.nfe
        self.plan, self.backend, self.method = plan, name, plan.method
        # the kernels run the network as packed now (a copy keeps what they need); the reference
        # runs the module itself, as it is at each call (its hooks see every evaluation)
        self._model = model if name == "torch" else copy.deepcopy(model)
        self._conditional = model_cond_dim(model) > 0
        self._run = prepare_sample(name, self._model, plan)
        weights = next(model.parameters(), None)
        on_model = name in ("torch", "cuda") and weights is not None  # outputs on the model's device
        self._device = weights.device if on_model else torch.device("cpu")
        if name == "cuda" and self._device.type != "cuda":
            self._device = torch.device("cuda", torch.cuda.current_device())
        self._dtype = weights.dtype if name == "torch" and weights is not None else torch.float32
        self._least = least_chunk(name)
        self._first = first_chunk(name, model, self.nfe if self.nfe is not None else ADAPTIVE_GUESSED_NFE,
                                  self._least)
        self._what = f"sample (method {plan.method!r}, backend {name!r})"

    def __call__(self, n: int, seed: int = 0, *, start: int = 0, cond=None, return_info: bool = False, out=None,
                 progress: bool | None = None, callback=None):
        """Samples [n, dim] of stream indices start .. start + n - 1 (``fs.sample``'s arguments).
        A large n runs in chunks (see ``fastscore.chunks``): out= a tensor or numpy array [n, dim]
        or a ``.npy`` path to write into (returned instead of a new tensor), progress= True /
        False to force or silence the bar (None: shown for runs longer than ~2 s), callback(done,
        n) after each chunk; Ctrl-C stops the run within about a second."""
        n, start = check_int("n", n, 0), check_int("start", start, 0)
        if start + n > MAX_INDEX:
            raise ValueError(f"start + n must be <= 2**32 (sample indices of the random stream), got {start + n}")
        seed = check_seed(seed)
        if cond is not None or self._conditional:
            cond = check_cond(self._model, cond, n)
        # one kernel call straight out (a control loop's case) when the run is small and goes nowhere
        # special; the reference (no first chunk: it runs whole) goes through destination(), whose
        # memory check refuses an n beyond RAM before the run
        if out is None and not progress and self._first is not None and n <= self._first:
            x, info = self._chunk(start, start + n, seed, cond, 0)
            if callback is not None:
                callback(n, n)
            return (x, self._info(info, n)) if return_info else x
        dest = destination(out, n, self.plan.dim, self._dtype, self._device)
        infos = []

        def run(a: int, b: int):
            x, info = self._chunk(start + a, start + b, seed, None if cond is None else cond[a:b], a)
            infos.append(info)
            return x

        run_chunks(n, run, lambda a, b, x: store(dest, a, b, x), first=self._first, progress=progress,
                   callback=callback, desc=f"sample {self.method}", least=self._least)
        if not return_info:
            return dest
        if self.nfe is not None:
            return dest, self._info(None, n)
        return dest, {k: torch.cat([i[k] for i in infos]) if infos else torch.zeros(0, dtype=torch.int64)
                      for k in ADAPTIVE_INFO}

    def _chunk(self, a: int, b: int, seed: int, cond, offset: int):
        """(samples, adaptive info or None) of stream indices [a, b), checked finite."""
        out = self._run(b - a, seed, a, cond)
        x, info = out if self.nfe is None else (out, None)
        _check_finite(x, self._what, offset)
        return x, info

    def _info(self, info, n: int) -> dict:
        return info if info is not None else {"nfe": torch.full((n,), self.nfe, dtype=torch.int64)}


def _check_finite(x: torch.Tensor, what: str, offset: int) -> None:
    """check_finite_result's error, with a fast path for the common all-finite host result."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and np.isfinite(x.numpy()).all():
        return
    check_finite_result(x, what, offset)
