"""Tests for rlvr.eval.perplexity: batched, padded PPL against a one-sequence-at-a-time loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import make_random_model
from rlvr.eval.perplexity import perplexity_cross_terms, sequence_perplexity

# Ragged on purpose: prompt lengths 1..9, response lengths 1..14, so every batch pads both sides.
PROMPTS = ["1+2=", "what is 7*8? ", "a", "12+34+5=", "x y z:", "hello there"]
RESPONSES = ["3", "56 because 7*8", "bcd", "51.", "no answer here", "ok"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("ppl")
    base_dir = make_random_model(root / "base", seed=0)
    other_dir = make_random_model(root / "trained", seed=1)
    tok = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    other = AutoModelForCausalLM.from_pretrained(other_dir, dtype=torch.float32)
    # Forwards of a 32-wide model are thread overhead: one thread is ~100x faster on a busy box.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield base, other, tok
    torch.set_num_threads(threads)


def _direct_ppl(model, tok, prompt: str, response: str) -> float:
    """No padding, no batching: one forward of prompt + response, log_softmax, gather."""
    p = tok(prompt, add_special_tokens=True)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + r])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)  # [L, V]
    # token r[t] sits at position len(p) + t and is predicted by position len(p) + t - 1
    total = sum(logp[len(p) + t - 1, tok_id].item() for t, tok_id in enumerate(r))
    return math.exp(-total / len(r))


def test_batched_matches_one_at_a_time(models):
    base, _, tok = models
    expected = np.array([_direct_ppl(base, tok, p, r) for p, r in zip(PROMPTS, RESPONSES, strict=True)])
    assert len(set(np.round(expected, 6))) == len(expected)  # distinct values: a row mix-up would show
    for batch_size in (1, 4, 16):  # several padded layouts, including one batch holding all six
        got = sequence_perplexity(base, tok, PROMPTS, RESPONSES, batch_size=batch_size)
        np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_scores_only_response_tokens(models):
    base, _, tok = models
    # same response, different prompts: different context -> different perplexity
    a, b = sequence_perplexity(base, tok, ["1+2=", "zzzzzz"], ["345", "345"])
    assert a != pytest.approx(b, rel=1e-4)
    # a random 2-layer model over a 79-token vocab: perplexity near the vocab size, far from 1
    assert 10 < a < 500


def test_empty_response_is_nan_and_empty_prompt_is_an_error(models):
    base, _, tok = models
    got = sequence_perplexity(base, tok, ["1+2=", "a"], ["", "bc"])
    assert math.isnan(got[0])
    assert got[1] == pytest.approx(_direct_ppl(base, tok, "a", "bc"), rel=1e-5)
    with pytest.raises(ValueError, match="prompt 1"):
        sequence_perplexity(base, tok, ["a", ""], ["b", "c"])
    with pytest.raises(ValueError, match="one response per prompt"):
        sequence_perplexity(base, tok, ["a"], ["b", "c"])


def test_restores_training_mode(models):
    base, _, tok = models
    base.train()
    sequence_perplexity(base, tok, ["a"], ["b"])
    assert base.training
    base.eval()


def test_cross_terms_use_the_right_model_and_responses(models):
    base, trained, tok = models
    base_resp = RESPONSES
    model_resp = ["3", "56", "b", "51", "none", "ok ok"]
    got = perplexity_cross_terms(
        base,
        trained,
        tok,
        PROMPTS,
        base_resp,
        model_resp,
        batch_size=4,
        ref_responses=["3", "56", "bcd", "51", "x", "hi"],
    )
    for key, model, resp in [
        ("base_on_base", base, base_resp),
        ("base_on_model", base, model_resp),
        ("model_on_model", trained, model_resp),
        ("base_on_ref", base, ["3", "56", "bcd", "51", "x", "hi"]),
    ]:
        expected = [_direct_ppl(model, tok, p, r) for p, r in zip(PROMPTS, resp, strict=True)]
        np.testing.assert_allclose(got[key], expected, rtol=1e-5, err_msg=key)
        assert got["median"][key] == pytest.approx(float(np.median(expected)), rel=1e-5)
    # the two random models disagree, so swapping them would be caught
    assert not np.allclose(got["base_on_model"], got["model_on_model"], rtol=1e-3)
    with pytest.raises(ValueError, match="model_responses"):
        perplexity_cross_terms(base, trained, tok, PROMPTS, base_resp, model_resp[:2])


def test_cross_terms_with_the_bases_own_prompts_and_entropies(models):
    """The runner's use: the base's responses answer their own prompts (base_prompts), and the
    mean token entropies come from the same forward passes."""
    base, trained, tok = models
    base_prompts = list(reversed(PROMPTS))
    got = perplexity_cross_terms(
        base, trained, tok, PROMPTS, RESPONSES, RESPONSES, base_prompts=base_prompts, model_tokenizer=tok, batch_size=4
    )
    np.testing.assert_allclose(
        got["base_on_base"],
        [_direct_ppl(base, tok, p, r) for p, r in zip(base_prompts, RESPONSES, strict=True)],
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        got["base_on_model"], [_direct_ppl(base, tok, p, r) for p, r in zip(PROMPTS, RESPONSES, strict=True)], rtol=1e-5
    )
    _, ent = sequence_perplexity(trained, tok, PROMPTS, RESPONSES, return_entropy=True)
    assert got["entropy"]["model"] == pytest.approx(float(np.mean(ent)))
    assert 0 < got["entropy"]["base"] < math.log(79) + 1e-6  # at most the entropy of a uniform over the vocab
    with pytest.raises(ValueError, match="base_responses"):
        perplexity_cross_terms(base, trained, tok, PROMPTS, RESPONSES, RESPONSES, base_prompts=PROMPTS[:2])
