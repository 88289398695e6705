"""Several reasoning-gym tasks in one run (`data.tasks`, rlvr.tasks.reasoning_gym_mixture): exact
weighted shares, the held-out split per task, each task's problems those of the task alone, gold
answers scored 1 by reasoning-gym's own scorers; and `key:=value` on the command line, which
replaces a mapping (`data.task_config:={}` clears it) where `key=value` deep-merges."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import reasoning_gym
import yaml

import helpers
from rlvr.cli import main
from rlvr.config import ConfigError, Replace, load_config, parse_overrides, to_yaml
from rlvr.data import load_problems
from rlvr.tasks import mixture_sizes, reasoning_gym_problems, split_of

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny" / "grpo.yaml"
CHAIN = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}
MIX = f"data.tasks=[{{name: chain_sum, config: {CHAIN}, weight: 3}}, {{name: basic_arithmetic, weight: 1}}]"


def test_mixture_sizes_are_the_exact_weighted_shares():
    assert mixture_sizes([3, 1], 40) == [30, 10]
    assert mixture_sizes([1, 1, 1], 10) == [4, 3, 3]  # remainders 1/3 each: the earliest task gets the extra one
    assert mixture_sizes([2, 1], 4) == [3, 1]  # 2.67, 1.33: the larger remainder
    assert mixture_sizes([0.5, 0.25, 0.25], 7) == [3, 2, 2]  # 3.5, 1.75, 1.75: floors 3, 1, 1; +1 to the .75s
    rng = random.Random(0)
    for _ in range(200):  # against the definition: sums to size, each within 1 of size * w / sum(w)
        w = [rng.uniform(0.01, 5) for _ in range(rng.randint(1, 6))]
        size = rng.randint(0, 300)
        s = mixture_sizes(w, size)
        assert sum(s) == size and all(abs(n - size * x / sum(w)) < 1 for n, x in zip(s, w, strict=True))


def test_a_mixture_has_the_weighted_shares_the_split_per_task_and_each_tasks_own_problems():
    cfg = load_config(TINY, [MIX, "data.train_size=40", "data.eval_size=8"])
    assert cfg.data.task is None and cfg.data.task_config == {}  # the recipe's single task is replaced
    train, evals = load_problems(cfg.data)
    assert Counter(p.metadata["task"] for p in train) == {"chain_sum": 30, "basic_arithmetic": 10}
    assert Counter(p.metadata["task"] for p in evals) == {"chain_sum": 6, "basic_arithmetic": 2}
    order = [p.metadata["task"] for p in train]
    assert sum(a != b for a, b in zip(order[:-1], order[1:], strict=True)) > 1  # shuffled, not two blocks
    for split, problems in (("train", train), ("eval", evals)):
        assert all(split_of(p.metadata["question"]) == split for p in problems)
    assert not {p.prompt for p in train} & {p.prompt for p in evals}
    for name, config, n_train, n_eval in (("chain_sum", CHAIN, 30, 6), ("basic_arithmetic", {}, 10, 2)):
        alone = reasoning_gym_problems(name, config, "train", n_train, 0)
        assert sorted(p.prompt for p in train if p.metadata["task"] == name) == sorted(p.prompt for p in alone)
        alone = reasoning_gym_problems(name, config, "eval", n_eval, 1)
        assert sorted(p.prompt for p in evals if p.metadata["task"] == name) == sorted(p.prompt for p in alone)
    for p in train + evals:  # every gold answer is right by the task's own reasoning-gym scorer
        entry = p.metadata["entry"]
        assert entry["metadata"]["source_dataset"] == p.metadata["task"]
        assert reasoning_gym.get_score_answer_fn(p.metadata["task"])(p.answer, entry) == 1.0


def test_a_one_task_mixture_is_the_single_task():
    single = load_problems(load_config(TINY, ["data.train_size=20", "data.eval_size=5"]).data)
    mixed = load_problems(
        load_config(
            TINY, [f"data.tasks=[{{name: chain_sum, config: {CHAIN}}}]", "data.train_size=20", "data.eval_size=5"]
        ).data  # fmt: skip
    )
    for a, b in zip(single, mixed, strict=True):
        assert [(p.prompt, p.answer, p.id) for p in a] == [(p.prompt, p.answer, p.id) for p in b]


def test_a_recipe_inheriting_a_single_task_recipe_may_name_a_mixture_and_it_round_trips(tmp_path):
    r = tmp_path / "mix.yaml"
    r.write_text(
        yaml.safe_dump({"base": str(TINY), "data": {"tasks": [{"name": "chain_sum"}, {"name": "leg_counting"}]}})
    )
    cfg = load_config(r)
    assert cfg.data.task is None and [t.name for t in cfg.data.tasks] == ["chain_sum", "leg_counting"]
    (tmp_path / "config.yaml").write_text(to_yaml(cfg))  # what a run directory holds, read back (rlvr eval, resume)
    assert load_config(tmp_path / "config.yaml").data == cfg.data


@pytest.mark.parametrize(
    "overrides,says",
    [
        (["data.tasks=[{name: chain_sum}, {name: chain_sum, weight: 2}]"], "tasks names chain_sum more than once"),
        (["data.tasks=[{name: chain_sum, weight: 0}]"], "data.tasks.0.weight"),
        (["data.tasks=[]"], "tasks is empty"),
        (["data.tasks=[{name: chain_sum}]", "data.path=x.jsonl"], "needs source reasoning_gym, not 'jsonl'"),
        (["data.task=null"], "task is null"),
        (["data.tasks=[{name: chain_sum, size: 3}]"], "data.tasks.0.size"),
    ],
)
def test_bad_mixtures_are_one_line_at_load(overrides, says):
    with pytest.raises(ConfigError) as e:
        load_config(TINY, overrides)
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "overrides,says",
    [
        (
            ["data.tasks=[{name: chain_sum}, {name: basic_arithmetc}]"],
            "data.tasks[1].name: unknown reasoning-gym task 'basic_arithmetc'; did you mean basic_arithmetic",
        ),
        (
            ["data.tasks=[{name: chain_sum, weight: 100}, {name: basic_arithmetic}]", "data.eval_size=8"],
            "data.tasks (data.eval_size=8): task 'basic_arithmetic' (weight 1) gets 0 of the 8 eval problems",
        ),
        (
            ["data.tasks=[{name: chain_sum}, {name: basic_arithmetic, config: {min_termz: 2}}]"],
            "data.tasks (data.train_size=4000): task 'basic_arithmetic' with config {'min_termz': 2} failed: ",
        ),
    ],
)
def test_bad_mixtures_are_one_line_at_data_load(overrides, says):
    with pytest.raises(ConfigError) as e:
        load_problems(load_config(TINY, overrides).data)
    assert str(e.value).startswith(says), str(e.value)


def test_colon_equals_replaces_a_mapping_where_equals_merges():
    assert parse_overrides(["data.task_config:={}"]) == {"data": {"task_config": Replace({})}}
    assert load_config(TINY, ["data.task_config={}"]).data.task_config == CHAIN  # before: merged, not cleared
    assert load_config(TINY, ["data.task_config:={}"]).data.task_config == {}
    cfg = load_config(TINY, ["data.task_config:={min_terms: 3}", "data.task_config.max_terms=3"])
    assert cfg.data.task_config == {"min_terms": 3, "max_terms": 3}  # replaced, then a key set inside it
    assert load_config(TINY, ["algorithm:={name: rloo}"]).algorithm.name == "rloo"
    assert load_config(TINY, ["train.lr:=0.5"]).train.lr == 0.5  # a scalar: the same as =
    assert load_config(None, ["data.task_config:={min_terms: 3}"]).data.task_config == {"min_terms": 3}  # no base


def test_a_mixture_trains(tmp_path, capsys):
    model = helpers.make_random_model(tmp_path / "m", hidden=16)
    cfg = helpers.write_config(
        tmp_path / "c.yaml", model, {"data": {"train_size": 8, "eval_size": 4}},
        train={"steps": 1, "prompts_per_step": 4, "micro_batch_size": 8},
        reward={"functions": [{"name": "reasoning_gym"}]},
    )  # fmt: skip
    mix = "data.tasks=[{name: chain_sum}, {name: basic_arithmetic}]"
    assert main(["train", str(cfg), mix]) == 0, capsys.readouterr().err
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert written["task"] is None and [t["name"] for t in written["tasks"]] == ["chain_sum", "basic_arithmetic"]
