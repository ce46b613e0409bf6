"""Derived tolerances: how far a float32 kernel may be from the float64 reference.

A first-order rounding analysis (Higham, *Accuracy and Stability of Numerical
Algorithms*, ch. 3) evaluated along the float64 reference trajectory:

* one float32 forward pass of the MLP: a dot product of n terms plus a bias is off by at
  most gamma_{n+1} (|W| |h| + |b|), gamma_n = n u / (1 - n u), u = 2^-24; errors already in
  h pass through |W|; activations are 1-Lipschitz (SiLU 1.1) and the transcendental ones
  (tanh, SiLU, softplus through expf/expm1f/log1pf) add at most TRANSCENDENTAL_ULPS u of
  their input/output size;
* one sampler step: each Lin of its program rounds its m terms (gamma_{m+1} of their sizes),
  each network evaluation brings its error, each times the step's sensitivity to it;
* errors carried from earlier steps are multiplied by the step's Jacobian, computed
  exactly with autograd through the reference's own step function.

The result is a per-sample bound on |x_kernel - x_reference|: rigorous to first order,
typically 10-100x above the observed error, and orders of magnitude below what an
indexing, time-grid or random-stream bug produces.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fastscore import SDE, ScoreMLP, pack, rng
from fastscore.parity import evaluate
from fastscore.backends.reference import step
from fastscore.plan import SamplePlan, make_sample_plan
from fastscore.program import STATE, Lin

U = 2.0**-24
TRANSCENDENTAL_ULPS = 8  # libm's expf/expm1f/log1pf are within 1-2 ulp; the formulas add <= 4 roundings
LIPSCHITZ = {"relu": 1.0, "leaky_relu": 1.0, "tanh": 1.0, "softplus": 1.0, "silu": 1.1}


def gamma(n: int) -> float:
    return n * U / (1 - n * U)


def first_layer_input(model: ScoreMLP, t: float, n: int, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(c [n, width], its rounding bound [n, width]): the first layer's part that does not
    depend on x, as the kernels form it. The time part b + W_t phi(t) is rounded once (the
    time phase's export; Fourier features see 2 pi as the program's float32 parameter); a
    condition's part W_c cond is rounded once (the cond phase's
    export) and added in float32."""
    tc = torch.full((n, 1), float(t), dtype=torch.float64)
    first = model.layers[0]
    dim, E = model.dim, model.embed_dim
    W_t = first.weight[:, dim:dim + E]
    c = first.bias + model.embed(tc) @ W_t.T
    c_err = U * c.abs()
    if model.freqs is not None:  # the program holds 2 pi as a float32 parameter: each feature's
        # argument 2 pi w t is off by up to u |2 pi w t| (sin and cos are 1-Lipschitz)
        arg = (U * (2 * math.pi * float(t) * model.freqs.double()).abs()).repeat(2)
        c_err = c_err + (arg @ W_t.abs().T).expand_as(c)
    if not model.cond_dim:
        return c, c_err
    cc = cond.double() @ first.weight[:, dim + E:].T
    return c + cc, c_err + U * (cc.abs() + (c + cc).abs())


def call(model, x, t, cond=None):
    return model(x, t) if cond is None else model(x, t, cond.to(x.dtype))


def mlp_error_bound(model: ScoreMLP, x: torch.Tensor, t: float, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(s [n, dim], bound [n]) for a float32 forward pass at float64 inputs x, time t (and
    condition cond [n, cond_dim]): the bound is on the 2-norm of the error of each sample's
    output.

    Each layer's fresh rounding is at most gamma_{fan_in + 1} (|W| |h| + |b|) per unit;
    errors carried in from the layer below pass through W (spectral norm) and the
    activation (Lipschitz). The time features (and the condition) enter through the
    precomputed first-layer input c (first_layer_input)."""
    model = model.double()
    x = x.double()
    if not isinstance(model, ScoreMLP):  # an imported network: the generic bound of its program
        s, err = evaluate(pack(model), x, t, cond, bound=True)
        return s, err.norm(dim=1)
    with torch.no_grad():
        first = model.layers[0]
        Wx = first.weight[:, : model.dim]
        c, c_err = first_layer_input(model, t, x.shape[0], cond)
        z = x @ Wx.T + c
        err = (gamma(model.dim + 1) * (x.abs() @ Wx.abs().T + c.abs()) + c_err).norm(dim=1)
        lip, extra = LIPSCHITZ[model.activation], model.activation not in ("relu", "leaky_relu")
        for layer in model.layers[1:]:
            h = model.act(z)
            err = lip * err
            if extra:
                err = err + (TRANSCENDENTAL_ULPS * U * torch.maximum(z.abs(), h.abs())).norm(dim=1)
            W, b = layer.weight, layer.bias
            z = h @ W.T + b
            fresh = gamma(W.shape[1] + 1) * (h.abs() @ W.abs().T + b.abs())
            err = torch.linalg.matrix_norm(W, ord=2) * err + fresh.norm(dim=1)
        scale = 1.0 if model.std_sde is None else 1.0 / float(model.std_sde.std(float(t)))
        s = z * scale
        err = err * scale + (U * s.norm(dim=1) if model.std_sde is not None else 0)
    return s, err


class _Tape(dict):
    """A step's registers that give every Lin's result a zero perturbation leaf (its rounding
    enters there) and keep the size of its terms: T = sum_j |c_j| |r_j| elementwise, so a
    float32 Lin of m terms with float32-rounded coefficients is off by at most gamma_{m+1} T.
    The reference interpreter writes each op's result once, in program order."""

    def __init__(self, regs: dict, ops, coef):
        super().__init__(regs)
        self.ops, self.coef, self.i, self.lins = ops, coef, 0, []

    def __setitem__(self, name, value):
        op = self.ops[self.i]
        self.i += 1
        if isinstance(op, Lin):
            size = sum(abs(self.coef(c)) * self[r].detach().abs() for r, c in op.terms)
            leaf = torch.zeros_like(value, requires_grad=True)
            self.lins.append((gamma(len(op.terms) + 1) * size.norm(dim=1), leaf))
            value = value + leaf
        super().__setitem__(name, value)


def step_error_bound(model: ScoreMLP, plan: SamplePlan, x0: torch.Tensor, noise, cond=None):
    """Float64 trajectory from x0 [n, dim] by the reference's own step (the plan's program),
    and the per-sample bound [n] on the 2-norm of a float32 kernel's deviation from it.

    The state of a step is x with the registers the rule carries (a multistep rule's history),
    y = [x, carries...], one block of dim values each. Every network evaluation, every Lin's
    result and every noise draw of a step gets a zero perturbation; autograd then yields the
    exact sensitivities of each block of y_{k+1} to y_k (M_k), to each evaluation (J_e), each
    Lin (J_L) and each noise vector (J_z). The local error of step k in block r is
      sum_e ||J_e[r]|| E_e + sum_L ||J_L[r]|| gamma_{m_L + 1} ||T_L|| + sum_z ||J_z[r]|| gamma_8 ||z||
    with E_e = mlp_error_bound at the evaluation's input (an input computed within the step,
    such as Heun's predictor, brings its Lin's rounding through J_L), T_L the size of a Lin's
    terms (_Tape) and gamma_8 the float normals' error (normals.h: within 4.6 u). Block r of step k's error
    reaches the end's x through the x rows of M_{N-1} ... M_{k+1}, block columns r. Blocks
    keep a multistep rule's history (data predictions near T are ~1/m(t) times x) from
    inflating the bound on x. `noise(stream, k)`: the step-k normals [n, dim] of a stream."""
    model = model.double()
    names = (STATE, *plan.rule.carries)
    x = x0.double()
    n, dim = x.shape
    S = len(names)
    y = torch.cat([x] + [torch.zeros_like(x)] * (S - 1), dim=1)
    prior = torch.zeros(n, S, dtype=torch.float64)
    prior[:, 0] = gamma(2) * x.norm(dim=1)  # prior: z rounded to float32, times prior std
    locals_, maps = [prior], []
    norm = lambda m: torch.linalg.matrix_norm(m, ord=2)  # noqa: E731
    for k in range(plan.steps + int(bool(plan.program.final))):
        final = k == plan.steps  # the final program (the denoising step)
        evals, zs = [], []

        def score(xi, t):
            d = torch.zeros_like(xi, requires_grad=True)
            evals.append((xi.detach(), t, d))
            return call(model, xi, t, cond) + d

        def draw(stream):
            zs.append(noise(stream, k).clone().requires_grad_(True))
            return zs[-1]

        y_in = y.detach().requires_grad_(True)
        coef_row = plan.coef[k]
        ops = plan.program.final if final else plan.program.body
        regs = _Tape(dict(zip(names, y_in.split(dim, dim=1))), ops,
                     lambda c: float(coef_row[plan.program.coefficients.index(c)]))
        with torch.enable_grad():
            step(score, plan, regs, k, None if final else draw)
            y_next = torch.cat([regs[r] for r in names], dim=1)
            sources = [(mlp_error_bound(model, xi, t, cond)[1], d) for xi, t, d in evals] + regs.lins + [(gamma(8) * z.detach().norm(dim=1), z) for z in zs]
            leaves = [y_in] + [leaf for _, leaf in sources]
            rows = [torch.autograd.grad(y_next[:, i].sum(), leaves, retain_graph=True, allow_unused=True)
                    for i in range(S * dim)]
        jac = [torch.stack([(r[j] if r[j] is not None else torch.zeros_like(leaf)) for r in rows], dim=1)
               for j, leaf in enumerate(leaves)]  # each [n, S dim (out), in]
        local = torch.zeros(n, S, dtype=torch.float64)
        for (size, _), J in zip(sources, jac[1:]):
            for r in range(S):
                local[:, r] += norm(J[:, r * dim:(r + 1) * dim]) * size
        locals_.append(local)
        maps.append(jac[0])
        y = y_next.detach()
    # locals_[k] enters before maps[k]: walk back from the end with the x rows of the product
    def reach(carry, local):
        return sum(norm(carry[:, :, r * dim:(r + 1) * dim]) * local[:, r] for r in range(S))

    carry = torch.eye(S * dim, dtype=torch.float64)[:dim].expand(n, -1, -1)
    bound = reach(carry, locals_[-1])
    for k in range(len(maps) - 1, -1, -1):
        carry = carry @ maps[k]
        bound = bound + reach(carry, locals_[k])
    return y[:, :dim], bound


CURVATURE = {"relu": 0.0, "leaky_relu": 0.0, "tanh": 0.77, "silu": 0.5, "softplus": 0.25}  # max |act''|


def trace_error_bound(model: ScoreMLP, x: torch.Tensor, t: float, dirs: torch.Tensor):
    """(tr [n], bound [n], kinked [n]) for the float32 forward-mode trace sum_i dir_i.(ds/dx) dir_i
    with directions dirs [n, nt, dim] (unit vectors: the exact trace).

    Each tangent is a forward pass without bias through W and diag(act'(z)); its fresh
    rounding per layer is gamma_{fan_in + 1} |W| |dh| per unit (plus TRANSCENDENTAL_ULPS u
    for computed slopes), carried through ||W||_2; the primal's error dz moves a smooth
    slope by at most max|act''| |dz|. For ReLU-like activations the slope is exact unless
    a unit's pre-activation is within its rounding error of the kink: `kinked` flags those
    samples, whose trace may legitimately differ by a whole unit's contribution."""
    model = model.double()
    x, dirs = x.double(), dirs.double()
    n, nt, dim = dirs.shape
    with torch.no_grad():
        first = model.layers[0]
        Wx = first.weight[:, :dim]
        c, _ = first_layer_input(model, t, n)
        z = x @ Wx.T + c
        # primal error (norm per sample), as mlp_error_bound with the time features as inputs
        ez = (gamma(first.in_features + 1) * (x.abs() @ Wx.abs().T + c.abs())).norm(dim=1)
        dz = dirs @ Wx.T  # [n, nt, width]
        edz = (gamma(dim + 1) * (dirs.abs() @ Wx.abs().T)).norm(dim=2)  # [n, nt]
        kinked = torch.zeros(n, dtype=torch.bool)
        smooth = model.activation not in ("relu", "leaky_relu")
        lip, curv = LIPSCHITZ[model.activation], CURVATURE[model.activation]
        for layer in model.layers[1:]:
            kinked |= (~torch.tensor(smooth)) & (z.abs().min(dim=1).values <= ez)
            h = model.act(z)
            slope = torch.func.vmap(torch.func.vmap(torch.func.grad(lambda v: model.act(v))))(z)
            dh = slope[:, None, :] * dz
            edh = lip * edz + curv * ez[:, None] * dz.abs().amax(dim=2)
            if smooth:
                edh = edh + (TRANSCENDENTAL_ULPS * U * dh.abs()).norm(dim=2)
            W, b = layer.weight, layer.bias
            norm_W = torch.linalg.matrix_norm(W, ord=2)
            ez = lip * ez + ((TRANSCENDENTAL_ULPS * U * torch.maximum(z.abs(), h.abs())).norm(dim=1) if smooth else 0)
            ez = norm_W * ez + (gamma(W.shape[1] + 1) * (h.abs() @ W.abs().T + b.abs())).norm(dim=1)
            z = h @ W.T + b
            edz = norm_W * edh + (gamma(W.shape[1] + 1) * (dh.abs() @ W.abs().T)).norm(dim=2)
            dz = dh @ W.T  # [n, nt, dim] after the last layer
        scale = 1.0 if model.std_sde is None else 1.0 / float(model.std_sde.std(float(t)))
        terms = (dirs * dz).sum(2)  # [n, nt]
        tr = terms.sum(1) * scale
        bound = (dirs.norm(dim=2) * edz).sum(1) + gamma(nt * dim) * (dirs * dz).abs().sum((1, 2))
        bound = bound * scale + U * tr.abs()
    return tr, bound, kinked


def sample_bound(model: ScoreMLP, sde: SDE, method: str, steps: int, options: dict, n: int, seed: int, cond=None):
    """step_error_bound for fs.sample(model, sde, n, method, steps, seed=seed, cond=cond,
    **options) with eps = 1e-3 and start = 0: (float64 reference end [n, dim], per-sample
    bound [n])."""
    plan = make_sample_plan(model, sde, n, method, steps, 1e-3, seed, 0, options.get("snr", 0.16),
                            options.get("corrector_steps", 1), options.get("denoise", False), options.get("grid"))
    idx = np.arange(n)
    noise = lambda stream, k: torch.from_numpy(rng.normals(seed, idx, k, stream, plan.dim))  # noqa: E731
    x0 = plan.prior_std * noise(rng.STREAM_PRIOR, 0)
    return step_error_bound(model, plan, x0, noise, cond)
