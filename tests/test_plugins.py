"""Plugins (rlvr/plugins.py): an algorithm registered outside rlvr is usable by name from the CLI,
with `--import MODULE` (a module in a directory on PYTHONPATH) or an installed distribution's
`rlvr.algorithms` entry point (a dist-info written into a directory on sys.path, which
importlib.metadata finds like an installed one), and a sweep passes its imports to every cell."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import helpers
from rlvr.algorithms import base
from rlvr.cli import main
from rlvr.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
import torch

from rlvr.algorithms import GRPO, GRPOConfig, register_algorithm


class SignConfig(GRPOConfig):
    margin: float = 0.0


class Sign(GRPO):
    """GRPO whose advantage is the sign of the group-centred reward."""

    Config = SignConfig

    def compute_advantages(self, batch):
        centred = self.scalar_advantages(batch)
        batch.advantages = (torch.sign(centred) * (centred.abs() > self.config.margin))[:, None] * batch.response_mask

{register}
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A directory for plugin modules, on sys.path; the registry and sys.modules restored after."""
    d = tmp_path / "plugins"
    d.mkdir()
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    before = set(sys.modules)
    monkeypatch.syspath_prepend(str(d))
    yield d
    for name in set(sys.modules) - before:
        if name.startswith("rlvrplug"):
            del sys.modules[name]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return helpers.make_random_model(tmp_path_factory.mktemp("model") / "m", hidden=16)


def recipe(path: Path, model: Path, name: str) -> Path:
    algorithm = {"name": name} if name == "grpo" else {"name": name, "margin": 0.1}
    return helpers.write_config(
        path, model, {"data": {"train_size": 16, "eval_size": 4}}, algorithm=algorithm,
        train={"steps": 1, "prompts_per_step": 2, "micro_batch_size": 8},
    )  # fmt: skip


def write_dist(where: Path, entry_points: str) -> None:
    """A minimal installed distribution `rlvrplug 0.1` declaring `entry_points` (entry_points.txt)."""
    info = where / "rlvrplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rlvrplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_import_flag_registers_a_module_from_the_pythonpath(plugin_dir, model, tmp_path, capsys):
    (plugin_dir / "rlvrplug_sign.py").write_text(PLUGIN.format(register='register_algorithm("sign_cli")(Sign)'))
    cfg = recipe(tmp_path / "c.yaml", model, "sign_cli")
    # before: a registered name works only after a Python import
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "unknown algorithm 'sign_cli'" in err and "--import MODULE" in err
    assert main(["train", "--import", "rlvrplug_sign", str(cfg)]) == 0, capsys.readouterr().err
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["algorithm"]
    assert written["name"] == "sign_cli" and written["margin"] == 0.1
    capsys.readouterr()
    assert main(["train", "--import", "rlvrplug_nope", str(cfg)]) == 2
    assert capsys.readouterr().err.strip() == (
        "rlvr: config error: --import rlvrplug_nope: no module named 'rlvrplug_nope' "
        "(on sys.path, PYTHONPATH or the current directory)"
    )


def test_import_flag_from_the_command_line_with_pythonpath(tmp_path):
    """The real command, the module found through PYTHONPATH: --help-config lists the plugin's algorithm."""
    (tmp_path / "rlvrplug_cli.py").write_text(PLUGIN.format(register='register_algorithm("sign_env")(Sign)'))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    cmd = [sys.executable, "-m", "rlvr", "train", "--help-config"]
    r = subprocess.run([*cmd, "--import", "rlvrplug_cli"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "# algorithm.name: sign_env (Sign): adds or changes" in r.stdout
    assert "algorithm.margin = 0.0" in r.stdout


def test_entry_point_loads_lazily_and_only_when_named(plugin_dir, model, tmp_path, capsys):
    (plugin_dir / "rlvrplug_ep.py").write_text(PLUGIN.format(register=""))  # a class, not registered by itself
    write_dist(plugin_dir, "[rlvr.algorithms]\nsign_ep = rlvrplug_ep:Sign\nbroken = rlvrplug_missing:Nothing\n")
    load_config(recipe(tmp_path / "grpo.yaml", model, "grpo"))
    assert "rlvrplug_ep" not in sys.modules  # installed but not named: never imported
    cfg = load_config(recipe(tmp_path / "c.yaml", model, "sign_ep"))
    assert type(cfg.algorithm).__name__ == "SignConfig" and cfg.algorithm.margin == 0.1
    assert base.get_algorithm("sign_ep").__module__ == "rlvrplug_ep"
    capsys.readouterr()
    assert main(["train", str(tmp_path / "c.yaml")]) == 0, capsys.readouterr().err  # no --import needed
    with pytest.raises(ConfigError, match=r"entry point broken = 'rlvrplug_missing:Nothing' in group "
                       r"rlvr.algorithms \(distribution rlvrplug 0.1\) does not load: No module named"):  # fmt: skip
        load_config(recipe(tmp_path / "b.yaml", model, "broken"))
    with pytest.raises(ConfigError, match=r"unknown algorithm 'sign_e'; did you mean 'sign_ep'\?.*\bbroken\b"):
        load_config(recipe(tmp_path / "t.yaml", model, "sign_e"))


def test_a_sweep_passes_its_imports_to_every_cell(plugin_dir, model, tmp_path, capsys):
    (plugin_dir / "rlvrplug_sw.py").write_text(PLUGIN.format(register='register_algorithm("sign_sweep")(Sign)'))
    recipe(tmp_path / "r.yaml", model, "sign_sweep")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"base": "r.yaml", "output_dir": str(tmp_path / "sw"), "axes": {"seed": [0, 1]}}))
    assert main(["sweep", str(sweep), "--launcher", "print"]) == 2
    assert "unknown algorithm 'sign_sweep'" in capsys.readouterr().err
    assert main(["sweep", str(sweep), "--launcher", "print", "--import", "rlvrplug_sw"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if " -m rlvr " in line]
    assert len(lines) == 4  # train and eval of 2 cells
    assert all(" --import rlvrplug_sw " in line for line in lines), lines
    # the printed train command (without accelerate) trains the cell in a process that imported nothing itself
    del base._REGISTRY["sign_sweep"]
    sys.modules.pop("rlvrplug_sw")
    train = shlex.split(lines[0])
    assert main(train[train.index("rlvr") + 1 :]) == 0, capsys.readouterr().err
    assert yaml.safe_load((tmp_path / "sw" / "seed0" / "config.yaml").read_text())["algorithm"]["name"] == "sign_sweep"
