"""Model files: a trained ScoreMLP with its SDE in one file, loadable with one call and without
the code that trained it.

    fs.save_model("ring.fsm", model, sde)
    model, sde = fs.load_model("ring.fsm")

The file is a ``torch.save`` of plain data only: the format and its version, the network's
class and constructor arguments, the SDE's class and arguments, the weights (a state_dict) and
free-form metadata. It is read with ``torch.load(weights_only=True)``, which unpickles tensors
and plain containers and nothing else (no code runs), and validated: known classes, arguments
the constructors accept, weights of the right names and shapes, all finite.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .nn import ScoreMLP
from .sde import SDE, SDE_CLASSES

FORMAT = "fastscore.model"
VERSION = 1
_SDES = {cls.__name__: cls for cls in SDE_CLASSES.values()}


class ModelFileError(ValueError):
    """A file that is not a valid fastscore model file (names the file and what is wrong)."""


def save_model(path, model: ScoreMLP, sde: SDE, meta: dict | None = None) -> Path:
    """Writes `model` (a ScoreMLP) and `sde` to `path`; meta: plain data kept with them (say,
    the training settings). Returns the path."""
    if not isinstance(model, ScoreMLP):
        raise TypeError(f"model files hold fastscore.ScoreMLP networks, got {type(model).__name__}")
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a fastscore SDE, got {type(sde).__name__}")
    from . import __version__

    path = Path(path)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, "version": VERSION, "fastscore": __version__,
                "network": {"class": "ScoreMLP", "config": model.config()},
                "sde": {"class": type(sde).__name__, "config": sde.config()},
                "state_dict": state, "meta": dict(meta or {})}, path)
    return path


def load_model(path) -> tuple[ScoreMLP, SDE]:
    """(model in eval mode on the CPU, sde) from a file written by save_model; raises
    ModelFileError naming the file and the problem for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{os.fspath(path)!r}: no such file")
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # not a torch file, a truncated one, or one holding code
        raise ModelFileError(f"{os.fspath(path)!r} is not a fastscore model file ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''})") from None
    bad = _problem(data)
    if bad:
        raise ModelFileError(f"{os.fspath(path)!r}: {bad}")
    try:
        sde = _SDES[data["sde"]["class"]](**data["sde"]["config"])
        config = dict(data["network"]["config"])
        if config.get("std_sde") is not None:
            name, kwargs = config["std_sde"]
            config["std_sde"] = _SDES[name](**kwargs)
        model = ScoreMLP(**config)
        model.load_state_dict(data["state_dict"], strict=True)
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise ModelFileError(f"{os.fspath(path)!r}: invalid network or SDE ({err})") from None
    for name, p in model.state_dict().items():
        if not torch.isfinite(p).all():
            raise ModelFileError(f"{os.fspath(path)!r}: weight {name!r} has non-finite values")
    return model.eval(), sde


def _problem(data) -> str | None:
    """What is wrong with the file's top-level structure, or None."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return "not a fastscore model file (no format marker; write it with fastscore.save_model)"
    if data.get("version") != VERSION:
        return f"model file version {data.get('version')!r}; this fastscore reads version {VERSION}"
    net, sde = data.get("network"), data.get("sde")
    if not isinstance(net, dict) or net.get("class") != "ScoreMLP" or not isinstance(net.get("config"), dict):
        return "the network entry must be a ScoreMLP with its config"
    if not isinstance(sde, dict) or sde.get("class") not in _SDES or not isinstance(sde.get("config"), dict):
        return f"the sde entry must name one of {', '.join(_SDES)} with its config"
    std = net["config"].get("std_sde")
    if std is not None and not (isinstance(std, (tuple, list)) and len(std) == 2 and std[0] in _SDES):
        return "the network's std_sde must be (an SDE class name, its config) or None"
    if not isinstance(data.get("state_dict"), dict):
        return "no weights (state_dict)"
    return None
