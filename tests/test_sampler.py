"""rlvr/sampler.py's samplers against transformers `generate` and rlvr's HFEngine.

SharedPrefillEngine: the same tokens under greedy decoding, the same draws from the same seed, and the same
distribution from other seeds (a chi-square test that a planted bug, a wrong temperature or a missing top-p,
fails). LeanEngine: the same tokens as `generate` under greedy decoding (random Qwen2 and Llama models,
prompts of different lengths, left padding, chunks with and without padding, the tiny model), and the same
distribution as `generate` under sampling (chi-square tests of whole responses and of each position, which
planted bugs fail: temperature ignored, no top-p, one draw shared by a prefix's sequences, prefixes merged
by their last token, every sequence drawn from the first prompt's distribution, a zero-probability token
drawn)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch

import helpers
from rlvr import tiny
from rlvr.rollout import HFEngine, Sampling
from rlvr.sampler import LeanEngine, SharedPrefillEngine
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


# ------------------------------------------------------------------ LeanEngine: greedy, token for token


@pytest.fixture(scope="module")
def random_llama(random_lm):
    """A random Llama on the same character tokenizer, its head peaked and eos reachable as random_lm's."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tok = random_lm
    torch.manual_seed(1)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
        # eos's head row: the row of the token greedy decoding writes most, a little larger
        enc = encode_prompts(tok, varied_problems(9), return_tensors="pt", padding=True)
        out = model.generate(**enc, do_sample=False, max_new_tokens=12, pad_token_id=tok.pad_token_id)
        common = Counter(out[:, enc["input_ids"].shape[1] :].flatten().tolist()).most_common(1)[0][0]
        model.lm_head.weight[tok.eos_token_id] = model.lm_head.weight[common] * 1.05
    return model, tok


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize(
    "n,batch_size",
    [(3, 256), (3, 7), (4, 4)],  # one left-padded chunk; chunks that split a prompt's copies; one prompt a chunk
)
def test_lean_greedy_equals_generate(request, arch, n, batch_size):
    model, tok = request.getfixturevalue({"qwen2": "random_lm", "llama": "random_llama"}[arch])
    problems = varied_problems(9)  # prompts of 1 to 25 characters
    ours = draw(LeanEngine(model, tok, batch_size=batch_size), problems, n, GREEDY)
    assert_same_batch(ours, draw(HFEngine(model, tok, batch_size=batch_size), problems, n, GREEDY))
    ends = ours.response_mask.sum(-1)
    assert 1 < len(set(ends.tolist())) and ours.truncated.any() and not ours.truncated.all()  # rows end apart
    for i, p in enumerate(problems):  # transformers generate itself, one prompt at a time (no padding)
        enc = encode_prompts(tok, [p], return_tensors="pt")
        out = model.generate(**enc, do_sample=False, max_new_tokens=12, pad_token_id=tok.pad_token_id)
        resp = out[0, enc["input_ids"].shape[1] :].tolist()
        ended = resp[: resp.index(tok.eos_token_id) + 1] if tok.eos_token_id in resp else resp
        for j in range(n):
            row = ours.input_ids[n * i + j, ours.prompt_len :][ours.response_mask[n * i + j].bool()].tolist()
            assert row == ended, (i, j)


@pytest.mark.parametrize("k,n,batch_size", [(64, 2, 256), (12, 16, 16)])  # padded chunks; one prompt a chunk
def test_lean_greedy_tiny_model_equals_hfengine(tiny_lm, k, n, batch_size):
    model, tok = tiny_lm
    problems = tiny_problems(k)
    sampling = Sampling(temperature=0.0, max_new_tokens=8)
    ours = draw(LeanEngine(model, tok, batch_size=batch_size), problems, n, sampling)
    assert_same_batch(ours, draw(HFEngine(model, tok, batch_size=batch_size), problems, n, sampling))


def test_lean_same_seed_same_rows(tiny_lm):
    """The eval seeds each call: the same seed draws the same rows, another seed other rows."""
    model, tok = tiny_lm
    problems, sampling = tiny_problems(12), Sampling(temperature=1.0, max_new_tokens=8)
    a = draw(LeanEngine(model, tok, batch_size=40), problems, 8, sampling, seed=3)
    assert_same_batch(a, draw(LeanEngine(model, tok, batch_size=40), problems, 8, sampling, seed=3))
    assert a.completions != draw(LeanEngine(model, tok, batch_size=40), problems, 8, sampling, seed=4).completions


# ------------------------------------------------------------------ LeanEngine: in distribution


def response_counts(batch) -> list[Counter]:
    """Per problem, the frequencies of whole responses (their tokens up to eos)."""
    P = batch.prompt_len
    out: dict[str, Counter] = {}
    for i, p in enumerate(batch.problems):
        out.setdefault(p.id, Counter())[tuple(batch.input_ids[i, P:][batch.response_mask[i].bool()].tolist())] += 1
    return list(out.values())


def worst_joint_ratio(ref, other) -> float:
    """The largest chi-square statistic / critical value over problems, of whole responses."""
    worst = 0.0
    for ca, cb in zip(response_counts(ref), response_counts(other), strict=True):
        stat, df = chi_square_homogeneity(ca, cb)
        worst = max(worst, stat / critical(df))
    return worst


LEAN_DIST = {
    "t0.7-p0.8": Sampling(temperature=0.7, top_p=0.8, max_new_tokens=6),
    "t1.5-k3": Sampling(temperature=1.5, top_k=3, max_new_tokens=6),
}


@pytest.fixture(scope="module", params=list(LEAN_DIST))
def generate_draws(request, tiny_lm):
    """HFEngine's (transformers generate's) samples of the tiny model, whose answers depend on the whole
    prompt (the random models' next token depends mostly on the last one): 600 of each of 4 prompts."""
    model, tok = tiny_lm
    problems = tiny_problems(4)
    sampling = LEAN_DIST[request.param]
    return draw(HFEngine(model, tok), problems, N_DIST, sampling, seed=1), problems, sampling


# 450 sequences a chunk: chunks of one prompt (no attention mask) and chunks that mix two (left padded).
# Measured: the real sampler scores 0.3-0.4x the critical value, the planted bugs 1.9-29x.
def lean_ratio(model, tok, generate_draws, batch_size=450) -> float:
    ref, problems, sampling = generate_draws
    ours = draw(LeanEngine(model, tok, batch_size=batch_size), problems, N_DIST, sampling, seed=2)
    return max(worst_ratio(ref, ours), worst_joint_ratio(ref, ours))


def test_lean_same_distribution_as_generate(tiny_lm, generate_draws):
    model, tok = tiny_lm
    assert lean_ratio(model, tok, generate_draws) < 1.0


def _one_draw_per_node(real):
    return lambda probs, node: real(probs, torch.arange(len(probs)))[node]


def _first_node_only(real):
    return lambda probs, node: real(probs[:1], torch.zeros_like(node))


def _merged_by_last_token(real):
    def merged(node, token, V):  # the bug: a prefix keyed by its last token, not by (parent, token)
        keys, new = torch.unique(token, return_inverse=True)
        parent = torch.zeros(len(keys), dtype=torch.long).scatter_(0, new, node)
        return new, parent, keys

    return merged


def _no_truncation(real):  # temperature, top-k and top-p all dropped
    return lambda s: real(Sampling(max_new_tokens=s.max_new_tokens))


@pytest.mark.parametrize(
    "name,planted",
    [
        ("warpers", lambda real: lambda s: real(Sampling(1.0, s.top_p, s.top_k, s.max_new_tokens))),
        ("warpers", _no_truncation),
        ("draw", _one_draw_per_node),
        ("draw", _first_node_only),
        ("next_nodes", _merged_by_last_token),
    ],
    ids=["temperature-ignored", "no-top-p-top-k", "one-draw-per-prefix", "first-prompt-only", "prefixes-merged"],
)
def test_lean_distribution_test_catches_planted_bugs(tiny_lm, generate_draws, monkeypatch, name, planted):
    import rlvr.sampler

    model, tok = tiny_lm
    monkeypatch.setattr(rlvr.sampler, name, planted(getattr(rlvr.sampler, name)))
    assert lean_ratio(model, tok, generate_draws) > 1.0


def test_draw_follows_the_probabilities_and_never_draws_a_zero(monkeypatch):
    from rlvr.sampler import draw as draw_tokens

    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2, 0.0], [0.0, 0.1, 0.0, 0.9, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    node = torch.arange(3).repeat_interleave(20_000)
    torch.manual_seed(0)
    got = draw_tokens(probs, node)
    for d in range(3):
        counts = torch.bincount(got[node == d], minlength=5).double()
        assert counts[probs[d] == 0].sum() == 0
        live = probs[d] > 0
        expected = probs[d][live].double() * 20_000
        stat = float(((counts[live] - expected) ** 2 / expected).sum())
        assert stat < critical(max(int(live.sum()) - 1, 1)), (d, counts)
    # the extreme uniforms: 0 draws each row's first token of positive probability, the largest
    # float64 below 1 its last (where row + u rounds up to the next row, the clamp keeps it in its own)
    with pytest.raises(RuntimeError, match="inf"):  # as torch.multinomial (generate): a model's nan logits
        draw_tokens(torch.tensor([[0.5, float("nan")], [0.5, 0.5]]), torch.arange(2))
    for u, want in ((0.0, [0, 1, 4]), (1 - 2**-53, [3, 3, 4])):
        monkeypatch.setattr(torch, "rand", lambda k, dtype=None, device=None, u=u: torch.full((k,), u, dtype=dtype))
        assert draw_tokens(probs, torch.arange(3)).tolist() == want, u


# ------------------------------------------------------------------ wiring: eval.sampler, rollout.sampler


def test_eval_sampler_lean_samples_through_lean_engine_and_keys_the_base_cache(random_lm, monkeypatch):
    import rlvr.sampler
    from rlvr.eval.runner import base_cache_key, sample_rows
    from rlvr.eval.settings import EvalSettings

    model, tok = random_lm
    problems = varied_problems(6, seed=9)

    def score(ps, texts, completion_ids=None):
        return [float(len(t) % 2) for t in texts], None

    calls = []
    real = rlvr.sampler.LeanEngine._chunk
    monkeypatch.setattr(rlvr.sampler.LeanEngine, "_chunk", lambda self, *a: calls.append(1) or real(self, *a))
    assert EvalSettings().sampler == "lean"  # the default
    rows = {}
    for sampler in ("hf", "lean"):
        settings = EvalSettings(n=5, temperature=0.0, max_new_tokens=6, batch_size=8, sampler=sampler)
        rows[sampler] = sample_rows(HFEngine(model, tok), problems, settings, score, progress=False)
        assert bool(calls) == (sampler == "lean")
    assert rows["hf"] == rows["lean"]  # greedy: the same rows
    # lean draws other samples than hf from a seed: the base's cache is keyed by it; shared_prefill's are hf's
    key = {
        s: base_cache_key("tiny-missing", problems, EvalSettings(sampler=s)) for s in ("hf", "shared_prefill", "lean")
    }
    assert key["hf"] == key["shared_prefill"] and "sampler" not in key["hf"]
    assert key["lean"] == {"sampler": "lean", **key["hf"]}
    assert "sampler" not in base_cache_key("tiny-missing", problems, EvalSettings(sampler="lean"), engine="vllm")


def test_the_eval_resamples_a_lean_training_engine_with_its_own_sampler(random_lm):
    from rlvr.sampler import with_sampler

    model, tok = random_lm
    lean = LeanEngine(model, tok, batch_size=9)
    hf = with_sampler(lean, "hf")
    assert type(hf) is HFEngine and hf.model is model and hf.batch_size == 9
    assert with_sampler(lean, "lean") is lean
    other = object()
    assert with_sampler(other, "lean") is other  # vllm, a server: as they are


def test_rollout_sampler_key_builds_the_training_engine(random_lm, tmp_path):
    from rlvr.config import load_config
    from rlvr.errors import ConfigError
    from rlvr.sampler import build_engine

    model, tok = random_lm
    assert type(build_engine("hf", model, tok, batch_size=5)) is HFEngine  # the default: unchanged
    engine = build_engine("hf", model, tok, batch_size=5, sampler="lean")
    assert type(engine) is LeanEngine and engine.batch_size == 5
    assert load_config(None, ["model.path=tiny", "rollout.sampler=lean"]).rollout.sampler == "lean"
    with pytest.raises(ConfigError, match=r"^rollout\.sampler: lean applies to rollout\.engine=hf only$"):
        load_config(None, ["model.path=tiny", "rollout.engine=vllm", "rollout.sampler=lean"])
    with pytest.raises(ConfigError, match="rollout.sampler"):
        load_config(None, ["model.path=tiny", "rollout.sampler=fast"])
