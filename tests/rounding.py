"""Derived tolerances: how far a float32 kernel may be from the float64 reference.

A first-order rounding analysis (Higham, *Accuracy and Stability of Numerical
Algorithms*, ch. 3) evaluated along the float64 reference trajectory:

* one float32 forward pass of the MLP: a dot product of n terms plus a bias is off by at
  most gamma_{n+1} (|W| |h| + |b|), gamma_n = n u / (1 - n u), u = 2^-24; errors already in
  h pass through |W|; activations are 1-Lipschitz (SiLU 1.1) and the transcendental ones
  (tanh, SiLU, softplus through expf/expm1f/log1pf) add at most TRANSCENDENTAL_ULPS u of
  their input/output size;
* one sampler update x + a x + b s + c z sums four rounded terms: gamma_4 of their sizes,
  plus |b| times the score's error;
* errors carried from earlier steps are multiplied by the step's Jacobian
  (1 + a) I + b ds/dx, whose spectral norm is computed exactly with autograd.

The result is a per-sample bound on |x_kernel - x_reference|: rigorous to first order,
typically 10-100x above the observed error, and orders of magnitude below what an
indexing, time-grid or random-stream bug produces.
"""

from __future__ import annotations

import torch

from fastscore import ScoreMLP, SDE
from fastscore.backends.reference import em_step
from fastscore.plan import SamplePlan

U = 2.0**-24
TRANSCENDENTAL_ULPS = 8  # libm's expf/expm1f/log1pf are within 1-2 ulp; the formulas add <= 4 roundings
LIPSCHITZ = {"relu": 1.0, "leaky_relu": 1.0, "tanh": 1.0, "softplus": 1.0, "silu": 1.1}


def gamma(n: int) -> float:
    return n * U / (1 - n * U)


def mlp_error_bound(model: ScoreMLP, x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(s [n, dim], bound [n]) for a float32 forward pass at float64 inputs x, time t: the
    bound is on the 2-norm of the error of each sample's output.

    Each layer's fresh rounding is at most gamma_{fan_in + 1} (|W| |h| + |b|) per unit;
    errors carried in from the layer below pass through W (spectral norm) and the
    activation (Lipschitz). The time features enter through the precomputed first-layer
    bias c(t), rounded once."""
    model = model.double()
    x = x.double()
    with torch.no_grad():
        tc = torch.full((x.shape[0], 1), float(t), dtype=torch.float64)
        first = model.layers[0]
        Wx, Wt = first.weight[:, : model.dim], first.weight[:, model.dim :]
        c = first.bias + model.embed(tc) @ Wt.T  # [n, width], all rows equal
        z = x @ Wx.T + c
        err = (gamma(model.dim + 1) * (x.abs() @ Wx.abs().T + c.abs()) + U * c.abs()).norm(dim=1)
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


def _jacobian(model: ScoreMLP, x: torch.Tensor, t: float) -> torch.Tensor:
    """ds/dx [n, dim, dim] in float64."""
    f = lambda xi: model(xi[None], t)[0]  # noqa: E731
    return torch.func.vmap(torch.func.jacrev(f))(x.double())


def em_error_bound(model: ScoreMLP, sde: SDE, plan: SamplePlan, x0: torch.Tensor, noise) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 EM trajectory from x0 [n, dim] (the reference's own steps) and the per-sample
    bound [n] on the 2-norm of a float32 kernel's deviation from it.

    The error of step k, e_k, reaches the end multiplied by M_{N-1} ... M_{k+1} with
    M_j = (1 + a_j) I + b_j ds/dx (x_j): the bound is sum_k ||M_{N-1} ... M_{k+1}||_2 e_k.
    `noise(k)` gives the step-k normals [n, dim] (float64)."""
    model = model.double()
    x = x0.double()
    locals_ = [gamma(2) * x.norm(dim=1)]  # prior: z rounded to float32, times prior std
    maps = []
    eye = torch.eye(plan.dim, dtype=torch.float64)
    for k in range(plan.steps):
        t, h = plan.time(k), plan.h
        g2 = sde.diffusion_sq(t)
        a, b, c = -sde.drift_coeff(t) * h, g2 * h, (g2 * h) ** 0.5
        s, s_err = mlp_error_bound(model, x, t)
        z = noise(k)
        maps.append((1 + a) * eye + b * _jacobian(model, x, t).detach())
        terms = x.abs() + abs(a) * x.abs() + abs(b) * s.abs() + c * z.abs()
        locals_.append((gamma(4) * terms + c * U * z.abs()).norm(dim=1) + abs(b) * s_err)
        with torch.no_grad():
            x = em_step(model, sde, plan, x, k, noise, [])
    # locals_[k] enters before maps[k]: walk back from the end, accumulating the product
    bound = locals_[-1]
    carry = eye.expand(x.shape[0], -1, -1)
    for k in range(plan.steps - 1, -1, -1):
        carry = carry @ maps[k]
        bound = bound + torch.linalg.matrix_norm(carry, ord=2) * locals_[k]
    return x, bound


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
        tc = torch.full((n, 1), float(t), dtype=torch.float64)
        first = model.layers[0]
        Wx, Wt = first.weight[:, :dim], first.weight[:, dim:]
        c = first.bias + model.embed(tc) @ Wt.T
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
