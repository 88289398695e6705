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
    assert cfg.algorithm["name"] == "grpo" and cfg.rollout.n == 8


def test_overrides_are_typed_and_nested():
    assert parse_overrides(["train.lr=1e-4", "algorithm.scale=none", "eval.ks=[1,4]"]) == {
        "train": {"lr": 1e-4}, "algorithm": {"scale": "none"}, "eval": {"ks": [1, 4]}}
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
    from rlvr.trainer import load_problems

    with pytest.raises(ConfigError, match="data.task: unknown reasoning-gym task 'chain_summ'.*chain_sum"):
        load_problems(load_config(None, ["data.task=chain_summ"]))


def test_cli_prints_one_line_error_and_exits_2(tmp_path, capsys):
    rc = main(["train", write(tmp_path, {"train": {"stepz": 3}})])
    err = capsys.readouterr().err
    assert rc == 2
    assert "config error" in err and "train.stepz" in err and "Traceback" not in err
