"""`rlvr eval --server URL` (eval/server.py) against a stand-in completions server in a thread:
what is sent, how the answer becomes a batch, errors in one line. The real `vllm serve` test is
in tests/test_vllm.py (marked vllm)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from rlvr.errors import RunError
from rlvr.eval.server import ServerEngine
from rlvr.rollout import Sampling
from rlvr.tasks import Problem


@pytest.fixture
def fake_server():
    """Answers /v1/models with one model and /v1/completions with n choices: choice j of prompt p
    has j + 1 tokens, text f"{p}/{j}", finish_reason length when j + 1 == max_tokens."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code, obj):
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(200, {"data": [{"id": "served"}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            if body["prompt"] == "bad":
                return self._send(400, {"error": "prompt too\nlong"})
            choices = [
                {
                    "index": j,
                    "text": f"{body['prompt']}/{j}",
                    "finish_reason": "length" if j + 1 == body["max_tokens"] else "stop",
                    "logprobs": {"tokens": ["t"] * (j + 1), "token_logprobs": [-0.5] * (j + 1)},
                }
                for j in reversed(range(body["n"]))  # out of order: the engine sorts by index
            ]
            self._send(200, {"choices": choices})

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1", seen
    httpd.shutdown()


def test_requests_and_the_batch(fake_server):
    url, seen = fake_server
    engine = ServerEngine(url)
    assert engine.model == "served"  # the server's one model
    torch.manual_seed(0)
    b = engine.generate(
        [Problem("p0", "a"), Problem("p1", "a")], 3, Sampling(temperature=0.7, top_p=0.9, max_new_tokens=3)
    )
    assert sorted(s["prompt"] for s in seen) == ["p0", "p1"]
    for s in seen:
        assert {k: s[k] for k in ("model", "n", "temperature", "top_p", "max_tokens", "logprobs")} == {
            "model": "served",
            "n": 3,
            "temperature": 0.7,
            "top_p": 0.9,
            "max_tokens": 3,
            "logprobs": 1,
        }
        assert "top_k" not in s and isinstance(s["seed"], int)
    assert b.completions == ["p0/0", "p0/1", "p0/2", "p1/0", "p1/1", "p1/2"]  # prompt-major, by index
    assert b.response_mask.sum(-1).tolist() == [1, 2, 3, 1, 2, 3]
    assert b.truncated.tolist() == [False, False, True] * 2
    assert b.group.tolist() == [0, 0, 0, 1, 1, 1] and [p.prompt for p in b.problems] == ["p0"] * 3 + ["p1"] * 3
    torch.testing.assert_close(b.rollout_logprobs, -0.5 * b.response_mask)
    seeds = sorted(s["seed"] for s in seen)
    seen.clear()
    torch.manual_seed(0)
    engine.generate([Problem("p0", "a"), Problem("p1", "a")], 3, Sampling(temperature=0.7, top_p=0.9, max_new_tokens=3))
    assert sorted(s["seed"] for s in seen) == seeds  # seeds from torch's generator: a seeded eval repeats
    seen.clear()
    engine.generate([Problem("p0", "a")], 1, Sampling(temperature=0.0, top_p=0.5, top_k=5, max_new_tokens=3))
    assert seen[0]["temperature"] == 0.0 and seen[0]["top_p"] == 1.0 and seen[0]["top_k"] == 5  # greedy


def test_server_errors_are_one_line(fake_server):
    url, _ = fake_server
    with pytest.raises(RunError) as e:
        ServerEngine(url, "m").generate([Problem("bad", "a")], 1, Sampling(max_new_tokens=2))
    assert "\n" not in str(e.value) and "HTTP 400" in str(e.value) and "prompt too long" in str(e.value)
    with pytest.raises(RunError, match="--server: cannot reach http://127.0.0.1:9/v1/models"):
        ServerEngine("http://127.0.0.1:9", timeout=5)


def test_base_cache_key_names_the_engine_only_when_not_hf():
    from rlvr.eval.runner import base_cache_key
    from rlvr.eval.settings import EvalSettings

    problems, s = [Problem("p", "a", id="0")], EvalSettings(sampler="hf")
    hf = base_cache_key("tiny-missing", problems, s)
    assert "engine" not in hf  # existing caches keep their keys
    assert base_cache_key("tiny-missing", problems, s, engine="vllm") == {"engine": "vllm", **hf}
    # vllm draws alike whatever eval.sampler says (the hf engine's samplers; tests/test_sampler.py)
    assert base_cache_key("tiny-missing", problems, EvalSettings(), engine="vllm") == {"engine": "vllm", **hf}
