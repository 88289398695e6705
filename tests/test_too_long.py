"""`data.too_long` (rlvr.data.fit_prompts): prompts longer than the model's positions less
max_new_tokens stop the run naming the row (error, the default), are dropped and counted (filter),
or have the start of their question cut, the template kept (truncate). A character-level tokenizer
(one token per character, no BOS) gives the exact reference: the kept question is the longest
suffix that fits; a BPE tokenizer trained here checks that a cut between merges still fits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import helpers
from rlvr.cli import main
from rlvr.config import load_config
from rlvr.data import fit_prompts, fit_prompts_for, load_problems
from rlvr.errors import ConfigError
from rlvr.templates import apply_template, encode_prompts

LIMIT, NEW = 64, 8  # positions, max_new_tokens: prompts of up to 56 tokens fit


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return helpers.make_random_model(tmp_path_factory.mktemp("model") / "m", hidden=16)


@pytest.fixture(scope="module")
def char_tok(model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def rows_file(path: Path, lengths: list[int]) -> Path:
    """A JSONL of questions of the given lengths, without spaces (the char tokenizer drops spaces): one
    token per character."""
    rows = [{"prompt": (f"q{i}-" + "abcdefghij" * 40)[:n], "answer": "1"} for i, n in enumerate(lengths)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def problems(tmp_path: Path, lengths: list[int], template: str = "plain", **data):
    f = rows_file(tmp_path / "d.jsonl", lengths)
    cfg = load_config(
        None, [f"data.path={f}", f"data.eval_path={f}", f"data.template={template}", 'data.degenerate_golds="off"']
    )
    return load_problems(cfg.data)[0]


def tokens(tok, p) -> int:
    return len(encode_prompts(tok, [p])["input_ids"][0])


def test_error_names_the_row(tmp_path, char_tok):
    ps = problems(tmp_path, [10, 57, 80])
    assert fit_prompts(ps[:1], "error", char_tok, NEW, LIMIT, "training") == ps[:1]
    with pytest.raises(ConfigError, match=r"d\.jsonl row 2: the prompt is 57 tokens; with rollout.max_new_tokens=8 .*"
                       r"drop the row \(data.too_long: filter drops such rows, truncate cuts them\)$"):  # fmt: skip
        fit_prompts(ps, "error", char_tok, NEW, LIMIT, "training")


def test_filter_drops_the_long_rows_and_says_how_many(tmp_path, char_tok, capsys):
    ps = problems(tmp_path, [10, 56, 57, 80, 3])
    kept = fit_prompts(ps, "filter", char_tok, NEW, LIMIT, "training")
    assert [p.metadata["row"] for p in kept] == [1, 2, 5]  # 56 tokens + 8 = 64 fits; 57 does not
    err = capsys.readouterr().err.strip()
    assert err == (
        "rlvr: data.too_long=filter: dropped 2 of 5 training problems whose prompt is longer than 56 tokens (the "
        f"model's 64 positions less max_new_tokens 8); the longest: {tmp_path / 'd.jsonl'} row 4 (80 tokens)"
    )
    with pytest.raises(ConfigError, match=r"every one of the 2 training prompts is longer than 56 tokens"):
        fit_prompts(ps[2:4], "filter", char_tok, NEW, LIMIT, "training")


@pytest.mark.parametrize("template", ["plain", "r1"])
def test_truncate_keeps_the_longest_suffix_of_the_question_that_fits(tmp_path, char_tok, template, capsys):
    ps = problems(tmp_path, [10, 300, 400], template=template)
    questions = [p.metadata["question"] for p in ps]
    overhead = len(char_tok(apply_template(template, ""))["input_ids"])  # the template's own tokens
    limit = overhead + 64 if template == "r1" else LIMIT
    out = fit_prompts(ps, "truncate", char_tok, NEW, limit, "held-out")
    assert out == ps and ps[0].metadata["question"] == questions[0]  # a short one untouched
    for p, q in zip(ps[1:], questions[1:], strict=True):
        keep = limit - NEW - overhead  # the reference: the last `keep` characters, in the same template
        assert p.metadata["question"] == q[-keep:] and p.prompt == apply_template(template, q[-keep:])
        assert tokens(char_tok, p) == limit - NEW and p.metadata["prompt_tokens_before"] == len(q) + overhead
    assert "rlvr: data.too_long=truncate: cut the start of 2 of 3 held-out prompts" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"truncate cannot fit it: the template alone is more than"):
        fit_prompts(problems(tmp_path, [300], template="r1"), "truncate", char_tok, NEW, 40, "training")


def test_truncate_with_a_bpe_tokenizer_fits_and_keeps_a_suffix(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    ps = problems(tmp_path, [20, 300, 400, 250])
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.train_from_iterator([p.prompt for p in ps] * 4, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>")
    questions = [p.metadata["question"] for p in ps]
    fit_prompts(ps, "truncate", tok, NEW, 40, "training")
    for p, q in zip(ps, questions, strict=True):
        n = tokens(tok, p)
        assert n <= 32 and q.endswith(p.metadata["question"])
        if p.metadata["question"] != q:
            assert n >= 32 - 3  # cut near the budget, not far below it


def test_the_run_filters_at_load_and_eval_sees_the_same_problems(tmp_path, model, capsys):
    f = rows_file(tmp_path / "d.jsonl", [10, 20, 300, 12, 400, 15, 11, 9])
    cfg = helpers.write_config(
        tmp_path / "c.yaml", model, {"data": {"path": str(f), "eval_path": str(f), "degenerate_golds": "off",
                                              "train_size": None, "eval_size": None}},
        train={"steps": 1, "prompts_per_step": 2, "micro_batch_size": 8},
    )  # fmt: skip
    assert main(["train", str(cfg)]) == 2  # the default: error, naming the row
    assert "d.jsonl row 3: the prompt is 300 tokens" in capsys.readouterr().err
    assert main(["train", str(cfg), "data.too_long=filter"]) == 0
    err = capsys.readouterr().err
    assert "dropped 2 of 8 training problems" in err and "dropped 2 of 8 held-out problems" in err
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["too_long"] == "filter"
    run_cfg = load_config(tmp_path / "run" / "config.yaml")
    held_out = fit_prompts_for(load_problems(run_cfg.data)[1], "filter", str(model), run_cfg.rollout.max_new_tokens)
    assert [p.metadata["row"] for p in held_out] == [1, 2, 4, 6, 7, 8]
    # rlvr eval of the trained model reads the run's config: the same 6 held-out problems, not an error at row 3
    capsys.readouterr()
    args = ["eval", "--model", str(tmp_path / "run" / "final"), "--n", "2", "--resamples", "20", "--no-perplexity"]
    assert main(args) == 0, capsys.readouterr().err
    assert "dropped 2 of 8 held-out problems" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert metrics["model_metrics"]["problems"] == 6
