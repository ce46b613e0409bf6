"""Model files (fastscore.save_model / load_model) and the CLI over them: train, sample, logp,
with errors that name the problem and exit 2 without a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastscore as fs
from fastscore import cli

from cases import fresh_seed


def _model(seed, **kw):
    torch.manual_seed(seed)
    return fs.ScoreMLP(2, 16, 2, "silu", **kw)


@pytest.mark.parametrize("sde", [fs.VPSDE(0.2, 15.0), fs.VESDE(sigma=30.0), fs.EDMSDE(5.0), fs.CosineVPSDE()],
                         ids=lambda s: type(s).__name__)
def test_a_model_file_brings_back_the_network_and_its_sde(tmp_path, sde):
    seed = fresh_seed()
    model = _model(seed, time_embedding="fourier", std_sde=fs.SubVPSDE(), cond_dim=2)
    path = fs.save_model(tmp_path / "m.fsm", model, sde, meta={"note": "test"})
    loaded, loaded_sde = fs.load_model(path)
    assert loaded_sde == sde and loaded.config() == model.config() and not loaded.training
    x, t, c = torch.randn(5, 2), torch.rand(5, 1), torch.randn(5, 2)
    assert torch.equal(loaded(x, t, c), model(x, t, c))


def test_bad_model_files_are_refused_with_the_reason(tmp_path):
    model, sde = _model(0), fs.VPSDE()
    good = torch.load(fs.save_model(tmp_path / "good.fsm", model, sde), weights_only=True)
    cases = {
        "missing.fsm": (None, "no such file"),
        "garbage.fsm": (b"not a torch file", "is not a fastscore model file"),
        "plain.fsm": ({"weights": 1}, "no format marker"),
        "future.fsm": ({**good, "version": 99}, "version 99"),
        "sde.fsm": ({**good, "sde": {"class": "OtherSDE", "config": {}}}, "sde entry"),
        "shape.fsm": ({**good, "network": {"class": "ScoreMLP", "config": {**good["network"]["config"], "width": 17}}},
                      "invalid network"),
        "nan.fsm": ({**good, "state_dict": {**good["state_dict"],
                                            "layers.0.bias": torch.full_like(good["state_dict"]["layers.0.bias"],
                                                                             float("nan"))}}, "non-finite"),
    }
    for name, (content, match) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            torch.save(content, path)
        with pytest.raises(fs.ModelFileError, match=match):
            fs.load_model(path)


class Pickled(torch.nn.Module):  # code in a pickle: weights_only refuses to run it
    def __reduce__(self):
        return (print, ("ran code from a model file",))


def test_a_model_file_runs_no_code(tmp_path, capsys):
    torch.save({"format": "fastscore.model", "version": 1, "evil": Pickled()}, tmp_path / "evil.fsm")
    with pytest.raises(fs.ModelFileError, match="not a fastscore model file"):
        fs.load_model(tmp_path / "evil.fsm")
    assert "ran code" not in capsys.readouterr().out


def test_train_sample_logp_from_the_command_line(tmp_path, capsys):
    seed = fresh_seed()
    data = fs.datasets.ring(600, seed=seed % 1000).numpy()
    np.savetxt(tmp_path / "data.csv", data, delimiter=",", header="x,y", comments="")
    model_path = tmp_path / "ring.fsm"
    assert cli.main(["train", str(tmp_path / "data.csv"), "--out", str(model_path), "--steps", "30", "--width", "16",
                     "--depth", "2", "--batch-size", "128", "--seed", "3"]) == 0
    model, sde = fs.load_model(model_path)
    assert model.width == 16 and model.depth == 2 and sde == fs.VPSDE()
    out = tmp_path / "x.npy"
    assert cli.main(["sample", str(model_path), "-n", "300", "--method", "dpmpp_2m", "--steps", "8", "--seed", "5",
                     "--out", str(out), "--quiet"]) == 0
    want = fs.sample(model, sde, 300, "dpmpp_2m", 8, seed=5)
    assert np.array_equal(np.load(out), want.numpy())
    np.save(tmp_path / "pts.npy", data[:50])
    assert cli.main(["logp", str(model_path), str(tmp_path / "pts.npy"), "--method", "heun", "--steps", "20",
                     "--out", str(tmp_path / "lp.npy"), "--quiet"]) == 0
    want = fs.log_prob(model, sde, torch.from_numpy(data[:50]).float(), "heun", 20)
    assert np.array_equal(np.load(tmp_path / "lp.npy"), want.numpy())
    assert "log p of 50 points" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["sample", "missing.fsm", "-n", "3", "--out", "x.npy"], "no such file"),
    (["sample", "{model}", "-n", "3", "--out", "x.csv"], "--out must be a .npy"),
    (["sample", "{model}", "-n", "3", "--out", "x.npy", "--method", "nope"], "unknown method"),
    (["sample", "{model}", "-n", "-2", "--out", "x.npy"], "-2 is < 0"),
    (["logp", "{model}", "{bad}"], "finite numbers"),
    (["train", "{bad}", "--out", "m.fsm"], "finite numbers"),
    (["train", "{data}", "--out", "m.npy"], "would overwrite a data file"),
])
def test_user_mistakes_exit_2_with_the_reason_and_no_traceback(tmp_path, argv, message):
    model = fs.save_model(tmp_path / "m.fsm", _model(1), fs.VPSDE())
    np.save(tmp_path / "bad.npy", np.array([[1.0, np.nan]]))
    np.save(tmp_path / "data.npy", np.random.default_rng(0).normal(size=(10, 2)))
    argv = [a.format(model=model, bad=tmp_path / "bad.npy", data=tmp_path / "data.npy") for a in argv]
    env = dict(os.environ, PYTHONPATH=str(Path(fs.__file__).parents[1]))  # the fastscore under test
    run = subprocess.run([sys.executable, "-c", "import sys; from fastscore.cli import main; sys.exit(main())", *argv],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_help_teaches_by_example():
    for command in ("train", "sample", "logp"):
        with pytest.raises(SystemExit) as exit_:
            cli.main([command, "--help"])
        assert exit_.value.code == 0
