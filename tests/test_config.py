"""Config errors are one clear message naming the key, never a deep stack trace."""

import pytest
import yaml

from rlvr.cli import main
from rlvr.config import ConfigError, load_config, parse_overrides


def write(tmp_path, cfg) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def test_defaults_load():
    cfg = load_config(None)
    assert cfg.algorithm.name == "grpo" and cfg.rollout.n == 8


def test_overrides_are_typed_and_nested():
    assert parse_overrides(["train.lr=1e-4", "algorithm.scale=none", "eval.ks=[1,4]"]) == {
        "train": {"lr": 1e-4},
        "algorithm": {"scale": "none"},
        "eval": {"ks": [1, 4]},
    }
    cfg = load_config(None, ["train.lr=0.5", "rollout.n=2"])
    assert cfg.train.lr == 0.5 and cfg.rollout.n == 2


def test_unknown_key_suggests_close_match(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, {"train": {"lrr": 0.1}}))
    assert "unknown key 'train.lrr'" in str(e.value) and "did you mean 'train.lr'" in str(e.value)


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'rollut'.*did you mean 'rollout'"):
        load_config(write(tmp_path, {"rollut": {"n": 2}}))


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.steps=many"])
    assert "train.steps" in str(e.value) and "'many'" in str(e.value)


def test_bad_literal_lists_allowed():
    with pytest.raises(ConfigError, match="rollout.engine.*'hf' or 'vllm'"):
        load_config(None, ["rollout.engine=sglang"])


def test_missing_model_path():
    with pytest.raises(ConfigError, match="model.path: no such model directory: /nonexistent/model"):
        load_config(None, ["model.path=/nonexistent/model"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))


def test_override_without_equals():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config(None, ["train.lr"])


def test_eval_k_larger_than_n():
    with pytest.raises(ConfigError, match=r"eval.*ks \[8\] must lie in \[1, n=4\]"):
        load_config(None, ["eval.n=4", "eval.ks=[1,8]"])


def test_algorithm_options_validated_by_the_algorithm():
    from rlvr.algorithms import build_algorithm

    with pytest.raises(ConfigError, match="unknown key 'algorithm.scal'.*did you mean 'algorithm.scale'"):
        build_algorithm({"name": "grpo", "scal": "none"})
    with pytest.raises(ConfigError, match="algorithm.scale"):
        build_algorithm({"name": "grpo", "scale": "sometimes"})
    with pytest.raises(ConfigError, match="unknown algorithm 'gpro'.*did you mean 'grpo'"):
        build_algorithm({"name": "gpro"})


def test_unknown_task_is_named(tmp_path):
    from rlvr.data import load_problems

    with pytest.raises(ConfigError, match="data.task: unknown reasoning-gym task 'chain_summ'.*chain_sum"):
        load_problems(load_config(None, ["data.task=chain_summ"]).data)


def test_cli_prints_one_line_error_and_exits_2(tmp_path, capsys):
    rc = main(["train", write(tmp_path, {"train": {"stepz": 3}})])
    err = capsys.readouterr().err
    assert rc == 2
    assert "config error" in err and "train.stepz" in err and "Traceback" not in err


# ---------------------------------------------------------------- the algorithm section, typed


def test_algorithm_section_is_the_algorithms_own_config_after_load():
    from rlvr.algorithms import AlgorithmConfig, get_algorithm, registered_algorithms

    assert type(load_config(None).algorithm).__name__ == "GRPOConfig"
    for name in registered_algorithms():
        required = ["algorithm.teacher=tiny-teacher"] if name == "distill" else []  # distill's one required key
        cfg = load_config(None, [f"algorithm.name={name}", *required])
        assert type(cfg.algorithm) is get_algorithm(name).Config and isinstance(cfg.algorithm, AlgorithmConfig)
        assert cfg.algorithm.name == name
    cfg = load_config(None, ["algorithm={name: dapo, max_gen_batches: 4}"])
    assert (cfg.algorithm.max_gen_batches, cfg.algorithm.clip_high) == (4, 0.28)  # defaults filled in
    cfg.algorithm = {"name": "ppo", "critic_lr": 1e-3}  # assignment is validated the same way
    assert type(cfg.algorithm).__name__ == "PPOConfig" and cfg.algorithm.critic_lr == 1e-3


@pytest.mark.parametrize(
    "override,line",
    [
        ("algorithm.name=grpoo", "algorithm.name: unknown algorithm 'grpoo'; did you mean 'grpo'?"),
        ("algorithm.clip_hihg=0.3", "unknown key 'algorithm.clip_hihg'; did you mean 'algorithm.clip_high'?"),
        ("algorithm.gamma=0.9", "unknown key 'algorithm.gamma'"),  # a PPO option is no GRPO option
        ("algorithm.scale=sometimes", "algorithm.scale: Input should be 'group', 'batch' or 'none'"),
        ("algorithm.name=", "algorithm.name: missing; name a registered algorithm"),
        ("algorithm=grpo", "algorithm: expected a mapping with a name"),
        ("algorithm.name=rlvr.config:Nope", "algorithm.name: cannot import 'rlvr.config:Nope'"),
    ],
)
def test_bad_algorithm_fails_at_load_with_one_line_naming_the_key(tmp_path, override, line):
    path = write(tmp_path, {"algorithm": {"name": "grpo"}})
    with pytest.raises(ConfigError) as e:
        load_config(path, [override])
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(f"{path}: ") and line in msg, msg


def test_algorithm_without_a_name_fails(tmp_path):
    with pytest.raises(ConfigError, match=r"algorithm.name: missing; name a registered algorithm \(dapo, (\w+, )*grpo"):
        load_config(write(tmp_path, {"algorithm": {"clip_high": 0.3}}))


def test_bad_algorithm_in_the_cli_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["train", write(tmp_path, {"algorithm": {"name": "grpo", "clip_hihg": 0.3}})]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'algorithm.clip_hihg'; did you mean 'algorithm.clip_high'?" in err


def test_algorithm_by_import_path_is_validated_by_its_config(tmp_path, monkeypatch):
    (tmp_path / "plug_for_config_test.py").write_text(
        "from pydantic import Field\n"
        "from rlvr.algorithms import GRPO, GRPOConfig\n"
        "class MarginConfig(GRPOConfig):\n"
        "    margin: float = Field(0.1, description='m')\n"
        "class Margin(GRPO):\n"
        "    Config = MarginConfig\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(None, ["algorithm={name: 'plug_for_config_test:Margin', margin: 0.5}"])
    assert type(cfg.algorithm).__name__ == "MarginConfig" and cfg.algorithm.margin == 0.5
    with pytest.raises(ConfigError, match=r"unknown key 'algorithm.margn'; did you mean 'algorithm.margin'"):
        load_config(None, ["algorithm={name: 'plug_for_config_test:Margin', margn: 0.5}"])


def test_unimportable_algorithm_is_kept_as_written_for_eval_and_refused_by_train(tmp_path, capsys):
    """`rlvr eval` reads a run's config.yaml without the run's training code: the section is kept
    verbatim (and written back verbatim); `rlvr train` refuses it, naming the import error."""
    from rlvr.config import UnimportedAlgorithmConfig, to_yaml

    section = {"name": "no_such_module_xyz:Thing", "margin": 0.5, "clip_hihg": 1}
    path = write(tmp_path, {"algorithm": section, "rollout": {"n": 1}})
    cfg = load_config(path)
    assert isinstance(cfg.algorithm, UnimportedAlgorithmConfig) and cfg.algorithm.name == section["name"]
    assert cfg.algorithm.model_dump() == section and "No module named 'no_such_module_xyz'" in cfg.algorithm.reason
    (tmp_path / "again.yaml").write_text(to_yaml(cfg))
    assert load_config(tmp_path / "again.yaml") == cfg
    assert main(["train", path]) == 2
    err = capsys.readouterr().err
    assert "algorithm.name: cannot import 'no_such_module_xyz:Thing'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("recipe", ["tiny/grpo.yaml", "tiny/dapo.yaml", "paper/ppo.yaml", "paper/reinforce_pp.yaml"])
def test_resolved_config_round_trips(tmp_path, recipe):
    """The run directory's config.yaml (to_yaml of the resolved config) loads back to the same config."""
    from pathlib import Path

    from rlvr.config import to_yaml

    cfg = load_config(Path(__file__).resolve().parents[1] / "recipes" / recipe)
    (tmp_path / "config.yaml").write_text(to_yaml(cfg))
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg and type(again.algorithm) is type(cfg.algorithm)
    assert yaml.safe_load(to_yaml(again)) == yaml.safe_load(to_yaml(cfg))


def test_build_algorithm_takes_the_validated_config_or_a_dict():
    from rlvr.algorithms import build_algorithm

    cfg = load_config(None, ["algorithm={name: ppo, critic_lr: 1.0e-3}"])
    algo = build_algorithm(cfg.algorithm, max_new_tokens=cfg.rollout.max_new_tokens, group_size=cfg.rollout.n)
    assert type(algo).__name__ == "PPO" and algo.config == cfg.algorithm
    assert algo.config is not cfg.algorithm  # the algorithm's own copy
    assert build_algorithm(cfg.algorithm.model_dump()).config == cfg.algorithm


def test_help_config_lists_every_algorithms_options(capsys):
    from rlvr.algorithms import AlgorithmConfig, get_algorithm, registered_algorithms

    assert main(["train", "--help-config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = [ln.split(" = ")[0].strip() for ln in lines if " = " in ln]
    assert len(keys) == len(set(k for k in keys if not k.startswith("algorithm."))) + sum(
        k.startswith("algorithm.") for k in keys
    )
    shared = set(AlgorithmConfig.model_fields)
    for k in shared:  # shared options once, at the top level
        assert sum(ln.startswith(f"algorithm.{k} = ") for ln in lines) == 1, k
    for name in registered_algorithms():
        head = next(i for i, ln in enumerate(lines) if ln.startswith(f"# algorithm.name: {name} "))
        block = []
        for ln in lines[head + 1 :]:
            if not ln.startswith("  "):
                break
            block.append(ln.strip())
        fields = get_algorithm(name).Config.model_fields
        own = {k for k in fields if k not in shared}
        changed = {k for k in shared & set(fields) if fields[k].default != AlgorithmConfig.model_fields[k].default}
        assert {ln.split(" = ")[0].removeprefix("algorithm.") for ln in block} == own | changed, name
    assert "  algorithm.clip_high = 0.28 (shared default 0.2): eps_high (clip-higher)" in lines
    assert any(ln.startswith("  algorithm.critic_lr = None: critic learning rate") for ln in lines)
    assert any(ln.startswith("algorithm.name = 'grpo': ") and "ppo" in ln for ln in lines)
    assert "train.lr = 1e-05: AdamW learning rate" in lines
