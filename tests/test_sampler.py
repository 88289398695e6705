"""rlvr/sampler.py's SharedPrefillEngine against transformers `generate` and rlvr's HFEngine: the same
tokens under greedy decoding, the same draws from the same seed, and the same distribution from other
seeds (a chi-square test that a planted bug, a wrong temperature or a missing top-p, fails)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch

import helpers
from rlvr import tiny
from rlvr.rollout import HFEngine, Sampling
from rlvr.sampler import SharedPrefillEngine
from rlvr.tasks import Problem, reasoning_gym_problems
from rlvr.templates import encode_prompts


@pytest.fixture(scope="module")
def random_lm(tmp_path_factory):
    """The helpers' random Qwen2 with peaked logits (its head scaled) and an eos that greedy decoding
    reaches (eos's head row copied from a frequent token's, a little larger), so rows end at varied steps."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = helpers.make_random_model(tmp_path_factory.mktemp("sampler") / "m")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        head = model.lm_head.weight
        head.mul_(40.0)
        head[tok.eos_token_id] = head[tok.convert_tokens_to_ids("7")] * 1.05
    return model, tok


def varied_problems(k: int, seed: int = 0) -> list[Problem]:
    rng = random.Random(seed)
    return [
        Problem(prompt="".join(rng.choices(helpers.CHARS[:30], k=rng.randint(1, 25))), answer="", id=str(i))
        for i in range(k)
    ]


def draw(engine, problems, n, sampling, seed=0):
    torch.manual_seed(seed)
    return engine.generate(problems, n, sampling)


def assert_same_batch(a, b):
    assert torch.equal(a.input_ids, b.input_ids)
    assert torch.equal(a.attention_mask, b.attention_mask)
    assert torch.equal(a.response_mask, b.response_mask)
    assert torch.equal(a.truncated, b.truncated)
    assert torch.equal(a.group, b.group)
    assert a.prompt_len == b.prompt_len and a.completions == b.completions and a.problems == b.problems


GREEDY = Sampling(temperature=0.0, max_new_tokens=12)


@pytest.mark.parametrize("batch_size", [256, 7])  # 7: a call's chunks split a prompt's copies
def test_greedy_random_model_equals_generate_and_hfengine(random_lm, batch_size):
    model, tok = random_lm
    problems = varied_problems(9)
    ours = draw(SharedPrefillEngine(model, tok, batch_size=batch_size), problems, 3, GREEDY)
    assert_same_batch(ours, draw(HFEngine(model, tok, batch_size=batch_size), problems, 3, GREEDY))
    ends = ours.response_mask.sum(-1)
    assert 1 < len(set(ends.tolist())) and ours.truncated.any() and not ours.truncated.all()  # rows end apart
    # transformers generate itself, one prompt at a time (no padding): the same response tokens
    R = ours.input_ids.shape[1] - ours.prompt_len
    for i, p in enumerate(problems):
        enc = encode_prompts(tok, [p], return_tensors="pt")
        out = model.generate(**enc, do_sample=False, max_new_tokens=12, pad_token_id=tok.pad_token_id)
        resp = out[0, enc["input_ids"].shape[1] :].tolist()
        ended = resp[: resp.index(tok.eos_token_id) + 1] if tok.eos_token_id in resp else resp
        got = ours.input_ids[3 * i, ours.prompt_len :][ours.response_mask[3 * i].bool()].tolist()
        assert got == ended, i
        assert R >= len(ended)


@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny.ensure_tiny_model()
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def tiny_problems(k):
    return reasoning_gym_problems(tiny.TINY_TASK["name"], tiny.TINY_TASK["config"], "eval", k, seed=3)


def test_greedy_tiny_model_equals_hfengine(tiny_lm):
    model, tok = tiny_lm
    problems = tiny_problems(64)
    sampling = Sampling(temperature=0.0, max_new_tokens=8)
    ours = draw(SharedPrefillEngine(model, tok), problems, 2, sampling)
    assert_same_batch(ours, draw(HFEngine(model, tok), problems, 2, sampling))
    # and generate on the whole left-padded batch
    enc = encode_prompts(tok, problems, return_tensors="pt", padding=True)
    out = model.generate(**enc, do_sample=False, max_new_tokens=8, pad_token_id=tok.pad_token_id)
    for i in range(len(problems)):
        resp = out[i, enc["input_ids"].shape[1] :]
        mask = ours.response_mask[2 * i].bool()
        assert torch.equal(ours.input_ids[2 * i, ours.prompt_len :][mask], resp[: int(mask.sum())])


@pytest.mark.parametrize(
    "sampling",
    [
        Sampling(temperature=1.0, max_new_tokens=8),
        Sampling(temperature=0.6, top_p=0.95, max_new_tokens=8),
        Sampling(temperature=0.8, top_p=0.7, top_k=5, max_new_tokens=8),
    ],
)
def test_same_seed_same_draws_as_hfengine(tiny_lm, sampling):
    """It consumes the RNG as generate does: the eval's seeded calls draw the same rows."""
    model, tok = tiny_lm
    problems = tiny_problems(20)
    a = draw(SharedPrefillEngine(model, tok, batch_size=48), problems, 8, sampling, seed=11)
    assert_same_batch(a, draw(HFEngine(model, tok, batch_size=48), problems, 8, sampling, seed=11))


# ------------------------------------------------------------------ in distribution, from other seeds


def chi_square_homogeneity(a: Counter, b: Counter, min_expected: float = 5.0) -> tuple[float, int]:
    """Two-sample chi-square statistic and degrees of freedom, rare categories pooled into one."""
    na, nb = sum(a.values()), sum(b.values())
    cats, rare_a, rare_b = [], 0, 0
    for c in set(a) | set(b):
        tot = a[c] + b[c]
        if min(tot * na, tot * nb) / (na + nb) < min_expected:
            rare_a, rare_b = rare_a + a[c], rare_b + b[c]
        else:
            cats.append((a[c], b[c]))
    if rare_a + rare_b:
        cats.append((rare_a, rare_b))
    stat = 0.0
    for x, y in cats:
        tot = x + y
        ea, eb = tot * na / (na + nb), tot * nb / (na + nb)
        stat += (x - ea) ** 2 / ea + (y - eb) ** 2 / eb
    return stat, max(len(cats) - 1, 1)


def critical(df: int, z: float = 3.72) -> float:
    """Upper chi-square quantile at p ~ 1e-4 (Wilson-Hilferty)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def position_counts(batch, positions=(0, 1, 2)) -> list[Counter]:
    """Per problem and response position, the frequencies of (position, token) (eos and padding included)."""
    P = batch.prompt_len
    out: dict[str, Counter] = {}
    for i, p in enumerate(batch.problems):
        c = out.setdefault(p.id, Counter())
        for t in positions:
            c[(t, int(batch.input_ids[i, P + t]) if P + t < batch.input_ids.shape[1] else -1)] += 1
    return list(out.values())


def worst_ratio(ref, other) -> float:
    """The largest chi-square statistic / critical value over problems and positions."""
    worst = 0.0
    for ca, cb in zip(position_counts(ref), position_counts(other), strict=True):
        for t in (0, 1, 2):
            sa = Counter({k: v for k, v in ca.items() if k[0] == t})
            sb = Counter({k: v for k, v in cb.items() if k[0] == t})
            stat, df = chi_square_homogeneity(sa, sb)
            worst = max(worst, stat / critical(df))
    return worst


DIST = Sampling(temperature=0.7, top_p=0.8, max_new_tokens=3)
N_DIST = 600  # samples per problem: the planted bugs score 4-9x the critical value, the real sampler 0.3-0.7x


@pytest.fixture(scope="module")
def reference_draws(random_lm):
    model, tok = random_lm
    problems = varied_problems(3, seed=5)
    return draw(HFEngine(model, tok), problems, N_DIST, DIST, seed=1), problems


def test_same_distribution_as_hfengine_from_other_seeds(random_lm, reference_draws):
    model, tok = random_lm
    ref, problems = reference_draws
    ours = draw(SharedPrefillEngine(model, tok), problems, N_DIST, DIST, seed=2)
    assert not torch.equal(ref.input_ids, ours.input_ids)  # other seeds: other draws
    assert worst_ratio(ref, ours) < 1.0


@pytest.mark.parametrize(
    "planted",
    [
        lambda s: Sampling(temperature=1.0, top_p=s.top_p, max_new_tokens=s.max_new_tokens),  # temperature ignored
        lambda s: Sampling(temperature=s.temperature, top_p=1.0, max_new_tokens=s.max_new_tokens),  # no top-p
    ],
    ids=["temperature-ignored", "no-top-p"],
)
def test_distribution_test_catches_planted_bugs(random_lm, reference_draws, monkeypatch, planted):
    """The test above fails for a sampler that drops the temperature or the top-p."""
    import rlvr.sampler

    model, tok = random_lm
    ref, problems = reference_draws
    real = rlvr.sampler.warpers
    monkeypatch.setattr(rlvr.sampler, "warpers", lambda s: real(planted(s)))
    ours = draw(SharedPrefillEngine(model, tok), problems, N_DIST, DIST, seed=2)
    assert worst_ratio(ref, ours) > 1.0


# ------------------------------------------------------------------ wiring: eval.sampler


def test_eval_sampler_key_draws_the_same_rows_through_shared_prefill(random_lm, monkeypatch):
    import rlvr.sampler
    from rlvr.eval.runner import sample_rows
    from rlvr.eval.settings import EvalSettings

    model, tok = random_lm
    problems = varied_problems(6, seed=9)

    def score(ps, texts, completion_ids=None):
        return [float(len(t) % 2) for t in texts], None

    calls = []
    real = rlvr.sampler.SharedPrefillEngine._chunk
    monkeypatch.setattr(rlvr.sampler.SharedPrefillEngine, "_chunk", lambda self, *a: calls.append(1) or real(self, *a))
    rows = {}
    for sampler in ("hf", "shared_prefill"):
        settings = EvalSettings(n=5, temperature=0.9, top_p=0.9, max_new_tokens=6, batch_size=8, sampler=sampler)
        rows[sampler] = sample_rows(HFEngine(model, tok), problems, settings, score, progress=False)
        assert bool(calls) == (sampler == "shared_prefill")
    assert rows["hf"] == rows["shared_prefill"]


def test_eval_sampler_key_refuses_an_unknown_sampler():
    from pydantic import ValidationError

    from rlvr.eval.settings import EvalSettings

    with pytest.raises(ValidationError, match="sampler"):
        EvalSettings(sampler="shared")
