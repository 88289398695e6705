"""Problems from files, the hub API and reasoning-gym; templates; bad input stops
the run with one message naming file, row and column; a short run on a JSONL
math dataset written here."""

import json
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from helpers import make_random_model
from rlvr.config import ConfigError, format_validation_error
from rlvr.data import DataConfig, load_problems
from rlvr.rewards import RewardConfig, RewardRunner, build_reward
from rlvr.tasks import split_of
from rlvr.templates import QWEN_BOXED, TEMPLATES, apply_template


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def math_rows(n=60):
    """Sums with answers written as integers, and halves written as fractions."""
    rows = []
    for i in range(n):
        if i % 3 == 0:
            rows.append({"question": f"What is {i} divided by 2?", "solution": f"\\frac{{{i}}}{{2}}", "level": i % 5})
        else:
            rows.append({"question": f"What is {i} + {i + 7}?", "solution": str(2 * i + 7), "level": i % 5})
    return rows


MATH_COLUMNS = {"prompt": "question", "answer": "solution"}


# ------------------------------------------------------------ config


def test_default_is_the_old_reasoning_gym_config():
    d = DataConfig()
    assert (d.source, d.task, d.task_config, d.train_size, d.eval_size, d.seed, d.template) == (
        "reasoning_gym",
        "chain_sum",
        {},
        2000,
        256,
        0,
        "plain",
    )
    assert DataConfig(task="basic_arithmetic", train_size=5).eval_size == 256


def test_source_is_inferred():
    assert DataConfig(path="a/b.jsonl").source == "jsonl"
    assert DataConfig(path="a/b.parquet").source == "parquet"
    assert DataConfig(name="openai/gsm8k").source == "hf"
    assert DataConfig(path="a/b.jsonl").train_size is None  # all rows


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"template": "qwen_boxed"},
            r"data.template: .*unknown template 'qwen_boxed'; did you mean 'qwen-boxed'\? \(known: plain, qwen-boxed, r1, chat\)",
        ),
        ({"path": "x.csv"}, "cannot tell the format of path 'x.csv'"),
        ({"source": "jsonl"}, "needs data.path"),
        ({"columns": {"promt": "q"}}, "unknown key 'data.columns.promt'; did you mean 'data.columns.prompt'"),
        ({"train_size": 0}, "data.train_size"),
    ],
)
def test_bad_data_config_names_the_key(kwargs, match):
    with pytest.raises(ValidationError) as e:
        DataConfig(**kwargs)
    msg = format_validation_error(e.value, DataConfig, "data.")
    assert re.search(match, msg), msg


# ------------------------------------------------------------ sources


def test_jsonl_with_column_mapping_hash_split_and_extra_columns(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", math_rows())
    train, evals = load_problems(DataConfig(path=str(path), columns=MATH_COLUMNS, extra_columns=["level"]))
    assert len(train) + len(evals) == 60 and evals
    assert all(split_of(p.prompt) == "train" for p in train) and all(split_of(p.prompt) == "eval" for p in evals)
    p = next(p for p in train if p.prompt == "What is 1 + 8?")
    assert (p.answer, p.metadata["answer"], p.metadata["columns"], p.metadata["row"]) == ("9", "9", {"level": 1}, 2)
    assert p.metadata["question"] == p.prompt and p.id == "train-2"


def test_eval_file_and_sizes(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", math_rows(30))
    ev = write_jsonl(tmp_path / "test.jsonl", math_rows(8))
    cfg = DataConfig(path=str(path), eval_path=str(ev), columns=MATH_COLUMNS, train_size=10, seed=3)
    train, evals = load_problems(cfg)
    assert len(train) == 10 and len(evals) == 8
    rows = [p.metadata["row"] for p in train]
    assert rows == sorted(rows) and train == load_problems(cfg)[0]  # seeded subset, in file order
    assert [p.metadata["row"] for p in load_problems(cfg.model_copy(update={"seed": 4}))[0]] != rows
    with pytest.raises(ConfigError, match=r"data.train_size=31 but .*train.jsonl has only 30"):
        load_problems(cfg.model_copy(update={"train_size": 31}))


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = math_rows(40)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    train, evals = load_problems(DataConfig(path=str(tmp_path / "m.parquet"), columns=MATH_COLUMNS))
    assert sorted(p.prompt for p in train + evals) == sorted(r["question"] for r in rows)


def test_datasets_load_dataset_on_a_local_directory(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")  # keep ~/.cache clean
    d = tmp_path / "ds"
    d.mkdir()
    write_jsonl(d / "train.jsonl", math_rows(20))
    write_jsonl(d / "test.jsonl", math_rows(5))
    train, evals = load_problems(DataConfig(name=str(d), split="train", eval_split="test", columns=MATH_COLUMNS))
    assert (len(train), len(evals)) == (20, 5) and train[1].answer == "9"


def test_a_hub_name_offline_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"data.name: datasets.load_dataset\('nobody/no-such-dataset'"):
        load_problems(DataConfig(name="nobody/no-such-dataset"))


def test_reasoning_gym_source_unchanged():
    train, evals = load_problems(DataConfig(train_size=5, eval_size=3))
    assert (len(train), len(evals)) == (5, 3)
    p = train[0]
    assert p.metadata["entry"]["question"] == p.prompt and p.metadata["answer"] == p.answer
    with pytest.raises(ConfigError, match="data.task: unknown reasoning-gym task 'chain_summ'.*chain_sum"):
        load_problems(DataConfig(task="chain_summ"))
    with pytest.raises(ConfigError, match="data.task_config: 'chain_sum' rejected"):
        load_problems(DataConfig(task_config={"no_such_option": 1}))


def test_humaneval_source():
    train, evals = load_problems(DataConfig(source="humaneval"))
    assert len(train) + len(evals) == 164 and evals
    assert all("def " in p.prompt and p.metadata["tests"] for p in train)


# ------------------------------------------------------------ templates


def test_templates():
    q = "What is 1 + {2}?"  # braces in the question are kept as they are
    assert apply_template("plain", q) == q
    boxed = apply_template("qwen-boxed", q)
    assert boxed == QWEN_BOXED.replace("{question}", q).replace("{{}}", "{}")
    assert boxed.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + q)
    assert boxed.endswith(
        "Please reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
    )
    r1 = apply_template("r1", q)
    assert "<think> </think> and <answer> </answer>" in r1 and r1.endswith(f"User: {q}. Assistant:")
    with pytest.raises(ConfigError, match="unknown template 'r2'.*known: plain, qwen-boxed, r1, chat"):
        apply_template("r2", q)


def test_chat_template_uses_the_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(make_random_model(tmp_path / "m"))
    with pytest.raises(ConfigError, match="has no chat template"):
        apply_template("chat", "hi", tok)
    with pytest.raises(ConfigError, match="needs the tokenizer"):
        apply_template("chat", "hi")
    tok.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    assert apply_template("chat", "hi", tok) == "<user>hi<assistant>"


def test_templates_apply_to_every_source_and_keep_the_question(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", math_rows())
    train, evals = load_problems(DataConfig(path=str(path), columns=MATH_COLUMNS, template="qwen-boxed"))
    for p in train + evals:
        assert (
            p.prompt == apply_template("qwen-boxed", p.metadata["question"]) and p.metadata["template"] == "qwen-boxed"
        )
    assert set(TEMPLATES) == {"plain", "qwen-boxed", "r1", "chat"}


# ------------------------------------------------------------ bad input: one message naming file, row, column


def bad(tmp_path, rows, **cfg) -> str:
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ConfigError) as e:
        load_problems(DataConfig(path=str(path), **cfg))
    return str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^data.path: no such file: .*nowhere.jsonl$"):
        load_problems(DataConfig(path=str(tmp_path / "nowhere.jsonl")))
    with pytest.raises(ConfigError, match=r"^data.eval_path: no such file"):
        load_problems(
            DataConfig(
                path=str(write_jsonl(tmp_path / "a.jsonl", math_rows(3))),
                columns=MATH_COLUMNS,
                eval_path=str(tmp_path / "b.jsonl"),
            )
        )


def test_row_without_the_answer_column(tmp_path):
    rows = math_rows(20)
    del rows[16]["solution"]
    msg = bad(tmp_path, rows, columns=MATH_COLUMNS)
    assert msg == (
        f"data.path: {tmp_path / 'bad.jsonl'} row 17: no 'solution' column; set data.columns.answer "
        "(columns: question, level)"
    )


def test_default_column_names_missing(tmp_path):
    msg = bad(tmp_path, math_rows(3))
    assert "row 1: no 'prompt' column; set data.columns.prompt (columns: question, solution, level)" in msg


def test_non_string_prompt(tmp_path):
    rows = math_rows(5)
    rows[3]["question"] = 12345
    msg = bad(tmp_path, rows, columns=MATH_COLUMNS)
    assert "bad.jsonl row 4: column 'question' must be a string, got int (12345)" in msg


def test_empty_dataset(tmp_path):
    assert bad(tmp_path, []).endswith("bad.jsonl has no rows")
    assert bad(tmp_path, ["", "   "]).endswith("bad.jsonl has no rows")


def test_too_few_rows_for_an_eval_split(tmp_path):
    rows = [r for r in math_rows() if split_of(r["question"]) == "train"][:5]
    assert "no problems in the eval split" in bad(tmp_path, rows, columns=MATH_COLUMNS)


def test_invalid_json_line(tmp_path):
    rows = [json.dumps(r) for r in math_rows(4)]
    rows.insert(2, '{"question": "oops",')
    assert "bad.jsonl row 3: not valid JSON" in bad(tmp_path, rows, columns=MATH_COLUMNS)
    assert "row 1: expected a JSON object, got list" in bad(tmp_path, ["[1, 2]"], columns=MATH_COLUMNS)


def test_missing_extra_and_tests_columns(tmp_path):
    msg = bad(tmp_path, math_rows(4), columns=MATH_COLUMNS, extra_columns=["difficulty"])
    assert "row 1: no 'difficulty' column (listed in data.extra_columns)" in msg
    msg = bad(tmp_path, math_rows(4), columns={**MATH_COLUMNS, "tests": "tests"})
    assert "row 1: no 'tests' column; set data.columns.tests" in msg
    rows = [{"question": "q", "tests": 5}]
    assert "column 'tests': must be Python test source" in bad(
        tmp_path, rows, columns={"prompt": "question", "tests": "tests"}
    )


def test_parquet_that_is_not_parquet(tmp_path):
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(ConfigError, match="x.parquet is not a readable Parquet file"):
        load_problems(DataConfig(path=str(tmp_path / "x.parquet")))


# ------------------------------------------------------------ a short run on a JSONL math dataset


@pytest.fixture()
def math_jsonl(tmp_path):
    return write_jsonl(tmp_path / "math.jsonl", math_rows())


def test_jsonl_math_dataset_scored_through_the_runner(math_jsonl):
    data = DataConfig(path=str(math_jsonl), columns=MATH_COLUMNS, template="qwen-boxed", extra_columns=["level"])
    train, evals = load_problems(data)
    reward = build_reward(
        RewardConfig(functions=[{"name": "math_accuracy"}, {"name": "math_format", "weight": 0.1}], workers=2), data
    )
    try:
        runner = RewardRunner(reward)
        batch = train[:8]
        # right in a different form (fractions as decimals), right without a box, wrong with a box
        right = [f"The answer is \\boxed{{{_decimal(p.answer)}}}." for p in batch[:4]]
        unboxed = [f"It equals {p.answer}" if "frac" not in p.answer else f"It equals ${p.answer}$" for p in batch[4:6]]
        wrong = [f"\\boxed{{{_decimal(p.answer)}1}}" for p in batch[6:]]
        rewards, info = runner(batch, right + unboxed + wrong)
        assert rewards.tolist() == pytest.approx([1.1] * 4 + [1.0] * 2 + [0.1] * 2)
        assert info["reward/math_accuracy"] == pytest.approx(6 / 8)
        assert info["reward/math_format"] == pytest.approx(6 / 8)
        assert info["reward/errors"] == 0 and info["reward/timeouts"] == 0
    finally:
        reward.close()


def _decimal(answer: str) -> str:
    m = re.fullmatch(r"\\frac\{(\d+)\}\{2\}", answer)
    return str(int(m.group(1)) / 2) if m else answer


def test_short_training_run_on_a_jsonl_math_dataset(tmp_path, math_jsonl):
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    model = make_random_model(tmp_path / "model")
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "model": {"path": str(model)},
        "data": {"path": str(math_jsonl), "columns": MATH_COLUMNS, "train_size": 16, "template": "plain"},
        "reward": {
            "functions": [{"name": "math_accuracy"}, {"name": "math_format", "weight": 0.1}],
            "workers": 1,
            "timeout": 5,
        },
        "algorithm": {"name": "grpo"},
        "rollout": {"n": 4, "max_new_tokens": 6},
        "train": {"steps": 2, "prompts_per_step": 4, "micro_batch_size": 16, "lr": 1e-3},
        "eval": {"before": False, "after": True, "n": 2},
        "tracking": {"progress": False},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    trainer = Trainer(load_config(tmp_path / "c.yaml"))
    assert len(trainer.train_problems) == 16 and trainer.train_problems[0].metadata["source"] == str(math_jsonl)
    out = trainer.fit()
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for key in ("reward/mean", "reward/errors", "reward/timeouts", "reward/math_accuracy", "reward/math_format"):
        assert key in rows[0], key
    assert rows[0]["reward/errors"] == 0
    assert out["evals"][-1]["tag"] == "final"


def test_bad_input_stops_load_config_with_one_message(tmp_path):
    from rlvr.config import load_config

    with pytest.raises(ConfigError, match=r"reward.functions.0: .*unknown reward 'math_acuracy'"):
        load_config(None, ["reward.functions=[{name: math_acuracy}]"])
    with pytest.raises(ConfigError, match=r"data.template: .*unknown template 'qwen'"):
        load_config(None, ["data.template=qwen"])
