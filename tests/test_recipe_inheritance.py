"""Recipe inheritance (`base: other.yaml`): the merge rules, chains, cycles and missing bases, and
the 12 shipped recipes, which inherit from their directory's grpo.yaml and must resolve to exactly
the configs they gave when each was written out in full (tests/data/recipes_before_inheritance.json)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from rlvr.config import ConfigError, config_from_dict, load_config, read_recipe

ROOT = Path(__file__).resolve().parents[1]
BEFORE = json.loads((ROOT / "tests" / "data" / "recipes_before_inheritance.json").read_text())["recipes"]
ALGORITHMS = ["grpo", "ppo", "rloo", "reinforce_pp", "remax", "dapo"]


def as_now(raw: dict) -> dict:
    """A recipe as written before inheritance, with the keys that have moved since mapped to their
    new place: DAPO's overlong shaping, `reward.overlong_*` -> `algorithm.overlong_*`, once the
    reward section no longer has it."""
    from rlvr.rewards import RewardConfig

    raw = copy.deepcopy(raw)
    for key in ("overlong_buffer", "overlong_factor"):
        if key not in RewardConfig.model_fields and key in raw.get("reward", {}):
            raw.setdefault("algorithm", {})[key] = raw["reward"].pop(key)
    return raw


@pytest.mark.parametrize("recipe", sorted(BEFORE))
def test_recipe_resolves_to_exactly_what_it_was_before_inheritance(recipe):
    now = load_config(ROOT / recipe).model_dump(mode="json")
    before = config_from_dict(as_now(BEFORE[recipe])).model_dump(mode="json")
    assert now == before, {k: (now[k], before[k]) for k in now if now[k] != before[k]}


def _leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("recipe", sorted(r for r in BEFORE if not r.endswith("/grpo.yaml")))
def test_each_recipe_holds_only_what_differs_from_its_directorys_grpo(recipe):
    path = ROOT / recipe
    own = yaml.safe_load(path.read_text())
    assert own.pop("base") == "grpo.yaml"
    base = read_recipe(path.parent / "grpo.yaml")
    base_leaves = _leaves(base)
    same = {k: v for k, v in _leaves(own).items() if base_leaves.get(k, object()) == v and k != "algorithm.name"}
    assert not same, f"{recipe} repeats its base: {same}"
    assert len(path.read_text().splitlines()) <= 15


def test_child_deep_merges_over_base_and_lists_replace(tmp_path):
    (tmp_path / "a.yaml").write_text(
        yaml.safe_dump(
            {
                "output_dir": "runs/a",
                "train": {"steps": 5, "lr": 1e-3},
                "eval": {"n": 4, "ks": [1, 2, 4]},
                "algorithm": {"name": "grpo", "scale": "none", "kl_coef": 0.1},
            }
        )
    )
    (tmp_path / "b.yaml").write_text(
        yaml.safe_dump({"base": "a.yaml", "train": {"steps": 7}, "eval": {"ks": [1]}, "algorithm": {"clip_high": 0.3}})
    )
    r = read_recipe(tmp_path / "b.yaml")
    assert "base" not in r
    assert r["train"] == {"steps": 7, "lr": 1e-3} and r["eval"] == {"n": 4, "ks": [1]}  # a list replaces
    assert r["algorithm"] == {
        "name": "grpo",
        "scale": "none",
        "kl_coef": 0.1,
        "clip_high": 0.3,
    }  # same algorithm: merged
    cfg = load_config(tmp_path / "b.yaml", ["train.lr=2e-3"])  # overrides apply on top of the chain
    assert (cfg.train.steps, cfg.train.lr, cfg.output_dir, cfg.algorithm.scale) == (7, 2e-3, "runs/a", "none")


def test_another_algorithm_replaces_the_base_algorithm_section_whole(tmp_path):
    """GRPO's `scale` is no PPO option, and no key can be deleted by merging: a child naming
    another algorithm starts its `algorithm:` section afresh (as sweep cells do)."""
    (tmp_path / "grpo.yaml").write_text(
        yaml.safe_dump({"algorithm": {"name": "grpo", "scale": "none", "kl_coef": 0.1}})
    )
    (tmp_path / "ppo.yaml").write_text(
        yaml.safe_dump({"base": "grpo.yaml", "algorithm": {"name": "ppo", "critic_lr": 1e-3}})
    )
    assert read_recipe(tmp_path / "ppo.yaml")["algorithm"] == {"name": "ppo", "critic_lr": 1e-3}
    cfg = load_config(tmp_path / "ppo.yaml")
    assert type(cfg.algorithm).__name__ == "PPOConfig" and cfg.algorithm.kl_coef == 0.0


def test_chains_resolve_relative_to_each_recipe(tmp_path, monkeypatch):
    (tmp_path / "x" / "y").mkdir(parents=True)
    (tmp_path / "root.yaml").write_text(yaml.safe_dump({"train": {"steps": 3, "lr": 0.5}, "rollout": {"n": 4}}))
    (tmp_path / "x" / "mid.yaml").write_text(yaml.safe_dump({"base": "../root.yaml", "train": {"steps": 4}}))
    (tmp_path / "x" / "y" / "leaf.yaml").write_text(yaml.safe_dump({"base": "../mid.yaml", "rollout": {"n": 2}}))
    monkeypatch.chdir(ROOT)  # not relative to the working directory
    cfg = load_config(tmp_path / "x" / "y" / "leaf.yaml")
    assert (cfg.train.steps, cfg.train.lr, cfg.rollout.n) == (4, 0.5, 2)


def test_cycle_is_detected_and_named(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: c.yaml\n")
    (tmp_path / "c.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "a.yaml")
    msg = str(e.value)
    assert msg.startswith("recipe inheritance cycle: ") and len(msg.splitlines()) == 1
    assert [Path(p).name for p in msg.split(": ", 1)[1].split(" -> ")] == ["a.yaml", "b.yaml", "c.yaml", "a.yaml"]
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    with pytest.raises(ConfigError, match=r"cycle: .*self.yaml -> .*self.yaml"):
        load_config(tmp_path / "self.yaml")


def test_missing_base_names_the_file_and_who_asked(tmp_path):
    (tmp_path / "child.yaml").write_text("base: nope/parent.yaml\ntrain: {steps: 2}\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "child.yaml")
    assert str(e.value) == f"{tmp_path / 'child.yaml'}: base recipe not found: {tmp_path / 'nope' / 'parent.yaml'}"


def test_bad_base_value_and_errors_in_a_base(tmp_path):
    (tmp_path / "child.yaml").write_text("base: [a.yaml, b.yaml]\n")
    with pytest.raises(ConfigError, match=r"child.yaml: base: expected a recipe file name"):
        load_config(tmp_path / "child.yaml")
    (tmp_path / "parent.yaml").write_text("train: {stepz: 2}\n")
    (tmp_path / "kid.yaml").write_text("base: parent.yaml\n")
    with pytest.raises(ConfigError, match=r"unknown key 'train.stepz'; did you mean 'train.steps'"):
        load_config(tmp_path / "kid.yaml")
    (tmp_path / "broken.yaml").write_text("train: [\n")
    (tmp_path / "kid2.yaml").write_text("base: broken.yaml\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML"):
        load_config(tmp_path / "kid2.yaml")


def test_sweep_cells_read_inheriting_recipes(tmp_path):
    """A sweep's sibling recipe that inherits is resolved before the cell's algorithm options go on."""
    from rlvr.sweep import cell_recipe, load_sweep

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "grpo.yaml").write_text(
        yaml.safe_dump(
            {
                "train": {"steps": 3},
                "reward": {"workers": 1},
                "rollout": {"n": 2, "max_new_tokens": 6},
                "algorithm": {"name": "grpo", "scale": "none"},
            }
        )
    )
    (tmp_path / "r" / "ppo.yaml").write_text(
        yaml.safe_dump({"base": "grpo.yaml", "algorithm": {"name": "ppo", "critic_lr": 1e-3}})
    )
    (tmp_path / "s.yaml").write_text(
        yaml.safe_dump(
            {
                "base": "r/grpo.yaml",
                "output_dir": str(tmp_path / "out"),
                "axes": {"algorithm": ["grpo", "ppo"], "seed": [0]},
                "algorithms": {"ppo": {"vf_coef": 0.5}},
            }
        )
    )
    sweep, base = load_sweep(tmp_path / "s.yaml")
    raw, source = cell_recipe(sweep, base, {"algorithm": "ppo", "seed": 0})
    assert source == tmp_path / "r" / "ppo.yaml" and "base" not in raw
    assert raw["algorithm"] == {"name": "ppo", "critic_lr": 1e-3, "vf_coef": 0.5}
    assert raw["train"] == {"steps": 3} and raw["reward"] == {"workers": 1}
