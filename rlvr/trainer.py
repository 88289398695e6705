"""The algorithm-blind RL trainer.

One step: collect a batch (roll out n responses to each prompt, score them, keep
the groups the algorithm wants, refill while it asks for more) -> old log-probs
-> the algorithm's advantages -> epochs x minibatches of the algorithm's loss,
accumulated over micro-batches -> log, eval, checkpoint.

The trainer never asks which algorithm it runs, and implements no algorithm's
feature: it calls the algorithm's hooks at fixed points of the step (setup,
rollout_engine, after_scoring, keep_group, after_rollout, after_logprobs, compute_advantages,
prepare, forward_extras, compute_loss, state_dict; algorithms/base.py) and offers
them services: `prepare_model` (a model trained, stepped, clipped and
checkpointed with the policy, or a frozen one), `rollout(problems, n, sampling)`,
`score(batch)`, `forward(fn, batch)` and `logprobs(model, batch)`.

Distribution: accelerate owns processes. Each process rolls out its own share of
the step's prompts (whole groups stay on one process). Loss normalisers (token
and sequence counts of the minibatch) and whitening statistics are summed over
processes, and each micro-batch loss is scaled by the world size to undo DDP's
gradient averaging, so 2 processes make the same update as 1 over the same
global batch. Gradient sync is placed by hand on the last micro-batch of a
minibatch (no_sync before it; accelerate passes the boundary on to DeepSpeed),
so the number of micro-batches may vary from step to step. DeepSpeed, FSDP2 and LoRA enter through
one-line hooks into rlvr/zero.py, rlvr/fsdp.py, rlvr/sharding.py and rlvr/lora.py.

What keeps a run honest when things go wrong (non-finite steps and weights, SIGTERM, a dead
launcher) is in rlvr/guards.py, mixed in as `RunGuards`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml

from rlvr import checkpoint as ckpt
from rlvr import fsdp, fused, lora, mismatch, prefix, rundir, sharding, zero
from rlvr.advantages import batch_std
from rlvr.algorithms import build_algorithm
from rlvr.batch import RolloutBatch, concat_batches
from rlvr.config import ConfigError, RunConfig, to_yaml
from rlvr.data import fit_prompts, load_problems
from rlvr.guards import STOP_SIGNALS, RunGuards, Schedule, die_with_launcher, grad_norm  # noqa: F401
from rlvr.losses import all_reduce_sum
from rlvr.models import (
    configure_cpu_threads,
    disable_dropout,
    load_model_and_tokenizer,
    resolve_model_path,
)
from rlvr.rewards import RewardFn, RewardRunner, build_reward
from rlvr.rewards.adapter import TrainerState
from rlvr.rewards.runner import completion_id_lists
from rlvr.rollout import Sampling, model_max_length
from rlvr.sampler import build_engine  # rollout.sampler: hf, shared_prefill or lean
from rlvr.tasks import Problem
from rlvr.timing import StepTimer

if TYPE_CHECKING:
    from rlvr.eval.settings import EvalSettings

COUNTED = ("reward/errors", "reward/timeouts")  # verifier metrics that are counts, not means


def make_accelerator(cfg: RunConfig, world: int):
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    sharding.check_launch(world)  # WORLD_SIZE > 1 without a launcher: one line, not accelerate's traceback
    # several CPU processes (and DeepSpeed on CPU) need gloo; one process needs no group
    cpu_group = world > 1 and not torch.cuda.is_available()
    handlers = [InitProcessGroupKwargs(backend="gloo")] if cpu_group else []
    extra = fsdp.accelerator_kwargs()  # FSDP on a CPU-only machine: the plugin accelerate would drop (rlvr/fsdp.py)
    acc = Accelerator(
        log_with=cfg.tracking.report_to or None, project_dir=cfg.output_dir, kwargs_handlers=handlers, **extra
    )
    fsdp.enable_on_cpu(acc, extra.get("fsdp_plugin"))
    sharding.check_engine(acc)  # the engine asked for, and processes that sync: else one line (rlvr/sharding.py)
    fsdp.check_version(acc)
    t = cfg.train  # DeepSpeed's batch and clipping settings from rlvr's (no-op without DeepSpeed)
    share = t.prompts_per_step // acc.num_processes * cfg.rollout.n
    zero.configure(acc, share, minibatches=t.minibatches, micro_batch_size=t.micro_batch_size, grad_clip=t.grad_clip)
    return acc


def flat_config(d: dict, prefix: str = "") -> dict[str, int | float | str | bool]:
    """Dotted keys and scalar values, as trackers' hyperparameter tables need (tensorboard)."""
    return {
        k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
        for k, v in rundir.flatten(d, prefix).items()
        if v != {}  # an empty section has no keys
    }


def resolved_config(cfg: RunConfig) -> dict[str, Any]:
    """The run's config as its config.yaml holds it: the algorithm built with the run's context, every
    default filled in."""
    algo = build_algorithm(cfg.algorithm, max_new_tokens=cfg.rollout.max_new_tokens, group_size=cfg.rollout.n)
    resolved = cfg.model_copy(deep=True)
    resolved.algorithm = algo.config.model_dump(mode="json")
    return yaml.safe_load(to_yaml(resolved))


def check_run_dir(cfg: RunConfig, overwrite: bool = False) -> dict[str, Any] | None:
    """Refuse a run whose output_dir holds another run (one line naming the keys); the finished run's
    record when it is this one, done (rlvr/rundir.py). Reads only: call it before anything loads."""
    old = lambda raw: resolved_config(RunConfig.model_validate(raw))  # noqa: E731  (this version's defaults)
    return rundir.check(Path(cfg.output_dir), resolved_config(cfg), normalize=old, overwrite=overwrite)


class Trainer(RunGuards):
    def __init__(self, cfg: RunConfig, reward_fn: RewardFn | None = None, overwrite: bool = False):
        die_with_launcher()  # first: a worker orphaned from here on ends instead of training on
        self.cfg = cfg
        self.overwrite = overwrite  # delete the run in output_dir and start afresh (rlvr train --overwrite)
        self.finished = check_run_dir(cfg, overwrite)  # another run there: one line, before anything loads
        self.out = Path(cfg.output_dir)
        self.step = 0  # the step being taken (1-based), for messages
        self.signalled = 0  # SIGTERM/SIGINT noted while steps run (stop_signals)
        chat = cfg.data.template == "chat"  # the model's chat template: problems wait for the tokenizer
        self.train_problems, self.eval_problems = ([], []) if chat else load_problems(cfg.data)
        reward_fn = reward_fn or build_reward(
            cfg.reward, cfg.data
        )  # a bad reward stops the run here, before the model loads
        if not chat:
            self._check_batch_shape(int(os.environ.get("WORLD_SIZE", "1")))
        self.accelerator = acc = make_accelerator(cfg, int(os.environ.get("WORLD_SIZE", "1")))
        self.rank, self.world = acc.process_index, acc.num_processes
        self.replicas = sharding.ReplicaCheck(acc)
        configure_cpu_threads(cfg.train.cpu_threads)
        torch.manual_seed(cfg.train.seed)

        self.algorithm = build_algorithm(
            cfg.algorithm, max_new_tokens=cfg.rollout.max_new_tokens, group_size=cfg.rollout.n
        )
        with acc.main_process_first():  # rank 0 builds the embedded model once
            path = self.model_path = resolve_model_path(cfg.model.path)
        model, self.tokenizer = load_model_and_tokenizer(path, cfg.model.dtype)
        if chat:
            self.train_problems, self.eval_problems = load_problems(cfg.data, self.tokenizer)
        # every prompt fits the model with its response (or data.too_long filters or cuts): before anything is written
        limit, eval_new = model_max_length(model), cfg.eval.settings(cfg.rollout).max_new_tokens
        self.train_problems = fit_prompts(
            self.train_problems, cfg.data.too_long, self.tokenizer, cfg.rollout.max_new_tokens, limit, "training"
        )
        self.eval_problems = fit_prompts(
            self.eval_problems, cfg.data.too_long, self.tokenizer, eval_new, limit, "held-out"
        )
        self._check_batch_shape(self.world)  # chat data is loaded only now, and filter may leave fewer prompts
        if cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if cfg.model.lora:  # peft adapters: only they train; the reference is the policy with them off
            model = lora.wrap(model, cfg.model.lora, acc, dropout=cfg.model.dropout)
        # the trained models with their optimizers and schedulers: the policy's first, then the algorithm's
        self.trained: list[torch.nn.Module] = []
        self.trained_names: list[str] = []  # their grad norms: grad_norm (the policy), <name>/grad_norm
        self.optimizers: list[Any] = []
        self.schedulers: list[torch.optim.lr_scheduler.LambdaLR] = []
        self.policy = self.prepare_model(model, lr=cfg.train.lr)
        fsdp.announce(acc, self.policy)  # FSDP: how much of the policy one process holds
        self.optimizer = self.optimizers[0]
        self.engine = build_engine(
            cfg.rollout.engine,
            acc.unwrap_model(self.policy),
            self.tokenizer,
            batch_size=cfg.rollout.generation_batch_size,
            sampler=cfg.rollout.sampler,
            vllm_memory=cfg.rollout.vllm_memory,
            vllm_sleep=cfg.rollout.vllm_sleep,
        )
        self.rewards = RewardRunner(reward_fn)
        self.timer = StepTimer()  # where each step's time goes: time/* (rlvr/timing.py)
        self.start_step = 0
        self.eval_results: list[dict[str, Any]] = []
        self.algorithm.setup(self)  # the algorithm's own models, through prepare_model

    # ------------------------------------------------------------ the loop

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.finished is not None:  # this run, done: nothing to train (rlvr/rundir.py)
            if self.accelerator.is_main_process:
                print(rundir.done_line(self.out, self.finished))
            return {"evals": self.finished.get("evals", []), "done": True}
        self.write_run_files()
        self.maybe_resume()
        if self.accelerator.is_main_process:  # not finished until it is again (a sweep reads it)
            (self.out / rundir.DONE).unlink(missing_ok=True)
        if self.start_step == 0 and self.accelerator.is_main_process:
            for name in ("metrics.jsonl", "evals.jsonl"):  # a restart without a checkpoint starts fresh
                (self.out / name).unlink(missing_ok=True)
        if cfg.eval.before and self.start_step == 0:
            self.evaluate(step=0, tag="base")
        bar = self.progress(range(self.start_step, cfg.train.steps))
        with self.stop_signals():
            for step in bar:
                self.step = step + 1  # the step being taken, for messages
                self.timer.start()
                with sharding.full_params(self.accelerator, self.policy):  # ZeRO-3, FSDP2: gathered once
                    batch, metrics = self.collect(step)
                metrics.update(self.batch_metrics(batch))
                metrics.update(self.train_on(batch))
                self.check_uniform(metrics)
                metrics.update({k: v for k, v in batch.metrics.items() if k not in metrics})  # the algorithm's own
                self.engine.sync_weights(sharding.unwrap(self.accelerator, self.policy))
                if cfg.eval.every and (step + 1) % cfg.eval.every == 0 and step + 1 < cfg.train.steps:
                    with self.timer("eval"):  # before the step's row, which holds its time
                        self.evaluate(step + 1, tag=f"step-{step + 1}")
                metrics.update(self.timer.metrics())
                self.log(step + 1, metrics, bar)
                self.maybe_checkpoint(step + 1)
                self.stop_if_signalled(step + 1)
        self.save_final()
        if cfg.eval.after:
            self.evaluate(cfg.train.steps, tag="final")
        if cfg.eval.full:
            self.full_eval()
        if self.accelerator.is_main_process:
            (self.out / "train_done.json").write_text(
                json.dumps({"steps": cfg.train.steps, "evals": self.eval_results})
            )
        self.accelerator.end_training()
        return {"evals": self.eval_results}

    # ------------------------------------------------------------ steps

    def collect(self, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        """Roll out and score until this process holds its quota of kept groups, then hand
        the batch to the algorithm's `after_rollout` (extra sampling passes).

        One round unless the algorithm's `keep_group` drops groups: then fresh prompts are
        drawn, at most `max_gen_batches` rounds; every process then trains on the smallest
        count any process reached, so shapes agree across processes.
        """
        algo, n = self.algorithm, self.cfg.rollout.n
        quota = self.cfg.train.prompts_per_step // self.world
        kept: list[RolloutBatch] = []
        have = seen = passed = rounds = 0
        verifier: dict[str, float] = {}  # counts summed, means weighted by samples scored
        while have < quota and rounds < algo.max_gen_batches:
            problems = self.step_problems(step, rounds)
            self.seed_round(step, rounds)
            batch = self.rollout(problems, n, self.sampling(), engine=algo.rollout_engine(self))
            for k, v in self.score(batch).items():
                verifier[k] = verifier.get(k, 0.0) + (v if k in COUNTED else v * len(batch))
            groups, scores = batch.rewards.view(-1, n), batch.scores.view(-1, n)  # [prompts, n]: groups are contiguous
            passing = [g for g in range(len(groups)) if algo.keep_group(groups[g], scores[g])]
            keep = passing[: quota - have]  # the rest is surplus: it passed, the batch is full (verl: batch[:traj_bsz])
            seen, rounds, have, passed = seen + groups.shape[0], rounds + 1, have + len(keep), passed + len(passing)
            kept.append(batch.select([g * n + j for g in keep for j in range(n)]))
        batch = concat_batches(kept, self.tokenizer.pad_token_id)
        fewest = have if self.world == 1 else self._min_over_processes(have)
        if fewest < have:
            batch = batch.select(list(range(fewest * n)))
        if fewest < quota and algo.raise_on_shortfall:
            raise RuntimeError(
                f"step {step + 1}: only {fewest} of {quota} groups per process kept after "
                f"{algo.max_gen_batches} generation rounds (algorithm.max_gen_batches)"
            )
        if fewest == 0:
            raise RuntimeError(
                f"step {step + 1}: no prompt group was kept after {rounds} generation rounds "
                "(the algorithm's keep_group dropped every group); nothing to train on"
            )
        algo.after_rollout(batch, self)
        info = {
            "sampling/rounds": float(rounds),
            "sampling/groups_kept_frac": passed / max(seen, 1),  # groups keep_group kept, surplus included
            "sampling/shortfall": float(quota - fewest),
        }
        return batch, self.collect_metrics(info, verifier, seen * n)

    def collect_metrics(self, info: dict[str, float], verifier: dict[str, float], scored: int) -> dict[str, float]:
        """`info` and the verifiers' means (sums over the `scored` samples) averaged over processes;
        the verifiers' counts (errors, timeouts) summed."""
        info = self.mean_over_processes({**info, **{k: v / scored for k, v in verifier.items() if k not in COUNTED}})
        counted = sorted(k for k in verifier if k in COUNTED)
        if counted:
            totals = all_reduce_sum(torch.tensor([verifier[k] for k in counted], dtype=torch.float64))
            info.update(zip(counted, totals.tolist(), strict=True))
        return info

    def step_problems(self, step: int, round: int = 0) -> list[Problem]:
        """This process's share of the step's prompts; the same global draw on every rank.

        Round 0 walks a per-epoch permutation of the training set; refill rounds
        (while the algorithm's keep_group drops groups) draw afresh, seeded by (step, round).
        """
        n_train, k = len(self.train_problems), self.cfg.train.prompts_per_step
        if round == 0:
            epoch, slot = divmod(step, n_train // k)
            order = np.random.default_rng(self.cfg.train.seed * 7919 + epoch).permutation(n_train)
            idx = order[slot * k : (slot + 1) * k]
        else:
            idx = np.random.default_rng([self.cfg.train.seed, step, round]).choice(n_train, k, replace=False)
        return [self.train_problems[i] for i in idx[self.rank :: self.world]]

    def seed_round(self, step: int, round: int) -> None:
        """Seed torch's global generator, which the engine samples from, per (step, round, rank)."""
        torch.manual_seed(
            int(np.random.SeedSequence([self.cfg.train.seed, step, round, self.rank]).generate_state(1)[0])
        )

    def train_on(self, batch: RolloutBatch) -> dict[str, float]:
        """Everything after collection: log-probs, the algorithm's advantages, the update."""
        parts = self.minibatch_parts(len(batch))  # [epoch][minibatch]: the rows of each optimizer step
        fill = fused.can_fuse(self, batch)  # the first minibatch's old log-probs from its own forward (rlvr/fused.py)
        with self.timer("logprobs"):
            self.logprob_pass(batch, skip=parts[0][0] if fill else None)
        self.algorithm.compute_advantages(batch)
        mismatch.apply_is_correction(batch, self.cfg.rollout)  # rollout.is_correction: token_tis scales advantages
        self.algorithm.prepare(batch)
        with self.timer("update"):
            return self.update(batch, parts, fill_first=fill)

    def logprob_pass(self, batch: RolloutBatch, skip: torch.Tensor | None = None) -> None:
        """Log-probs of the sampling policy (rows `skip` NaN: the update fills them, rlvr/fused.py), then the
        algorithm's own no-grad passes (`after_logprobs`)."""
        batch.old_logprobs = fused.old_logprobs(self, batch, skip)
        batch.metrics.update(mismatch.rollout_mismatch(batch))  # the engine's log-probs vs these (vllm)
        self.algorithm.after_logprobs(batch, self)

    def minibatch_parts(self, B: int) -> list[list[torch.Tensor]]:
        """The rows of each optimizer step of this step's update: per epoch, a fresh permutation split in
        train.minibatches parts."""
        gen = torch.Generator().manual_seed(self.cfg.train.seed + 17 * self.schedulers[0].last_epoch)
        M = self.cfg.train.minibatches
        return [list(torch.tensor_split(torch.randperm(B, generator=gen), M)) for _ in range(self.cfg.train.epochs)]

    def update(
        self, batch: RolloutBatch, parts: list[list[torch.Tensor]] | None = None, fill_first: bool = False
    ) -> dict[str, float]:
        """Epochs x minibatches of optimizer steps over `batch` (rows `parts`, default `minibatch_parts`), each
        minibatch's gradient accumulated over micro-batches; every trained model is stepped together. With
        `fill_first` the first minibatch's old log-probs are its own forward's, detached (rlvr/fused.py)."""
        cfg, acc = self.cfg, self.accelerator
        sums: dict[str, float] = {}  # compute_loss's metrics, weighted by tokens or summed (loss_metrics)
        tokens, losses, grad_norms, lrs = 0.0, [], [], []
        for m in self.trained:
            m.train()
        for e, epoch_parts in enumerate(parts if parts is not None else self.minibatch_parts(len(batch))):
            for j, part in enumerate(epoch_parts):
                mini = batch.select(part)
                fill = fill_first and e == 0 and j == 0  # on-policy: micro_loss fills old_logprobs
                if fill:
                    mini.old_logprobs = None
                mini.global_tokens = float(all_reduce_sum(mini.response_mask.sum().detach().cpu().double()))
                mini.global_seqs = float(all_reduce_sum(torch.tensor(float(len(mini)), dtype=torch.float64)))
                micros = list(self.micro_batches(mini, cfg.train.micro_batch_size))
                step_loss = 0.0
                for i, micro in enumerate(micros):
                    with self.sync_if(i == len(micros) - 1):
                        loss, metrics = self.micro_loss(micro)
                        zero.backward(acc, self.trained, loss * self.world)  # several DeepSpeed engines too
                    step_loss += float(loss.detach())
                    if fill:  # for later epochs and whatever reads the batch after the update
                        rows = part[i * cfg.train.micro_batch_size :][: len(micro)]  # micro_batches' chunks
                        batch.old_logprobs[rows.to(batch.old_logprobs.device)] = micro.old_logprobs
                    n_tok = float(micro.response_mask.sum())
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + float(v) * (1.0 if k in self.algorithm.loss_terms else n_tok)
                    tokens += n_tok
                if zero.enabled(acc):  # DeepSpeed clipped and stepped (or skipped: norm inf) in the backward
                    norms = zero.grad_norms(self.trained)
                elif cfg.train.grad_clip:  # each trained model on its own; the policy's norm is logged
                    norms = [acc.clip_grad_norm_(m.parameters(), cfg.train.grad_clip) for m in self.trained]
                else:
                    norms = [grad_norm(m) for m in self.trained]
                lrs.append(self.optimizer.param_groups[0]["lr"])  # the lr this optimizer step uses
                losses.append(float(all_reduce_sum(torch.tensor(step_loss, dtype=torch.float64))))
                if self.skip_nonfinite(step_loss, norms):  # every process together: no update, grads dropped
                    continue
                if cfg.train.grad_clip:
                    grad_norms.append([float(x) for x in norms])  # each trained model's
                for opt, sched in zip(self.optimizers, self.schedulers, strict=True):
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                self.check_weights()
                self.replicas(self.trained, self.step)  # once: the processes' weights agree (rlvr/sharding.py)
        out = self.loss_metrics(sums, tokens, len(losses))
        out["train/skipped_steps"] = float(self.schedulers[0].skipped)  # cumulative over the run
        out["loss"] = sum(losses) / len(losses)
        out["lr"] = sum(lrs) / len(lrs)  # the mean lr of this step's optimizer steps (not the next step's)
        for i, name in enumerate(self.trained_names if grad_norms else []):  # the policy's grad_norm, <name>/grad_norm
            out["grad_norm" if i == 0 else f"{name}/grad_norm"] = sum(g[i] for g in grad_norms) / len(grad_norms)
        return out

    def loss_metrics(self, sums: dict[str, float], tokens: float, steps: int) -> dict[str, float]:
        """compute_loss's metrics over the step and every process: token means (clip_frac, entropy, kl) weighted
        by their micro-batch's response tokens, so micro_batch_size does not change them; the algorithm's
        `loss_terms` (shares of the minibatch loss, like pg_loss) summed like the loss, per optimizer step."""
        keys = sorted(sums)
        t = all_reduce_sum(torch.tensor([sums[k] for k in keys] + [tokens], dtype=torch.float64)).tolist()
        terms = self.algorithm.loss_terms
        return {k: t[i] / (steps if k in terms else max(t[-1], 1.0)) for i, k in enumerate(keys)}

    def micro_loss(self, micro: RolloutBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The algorithm's loss on one micro-batch: the policy's log-probs at the sampling
        temperature and entropy (differentiated only if the algorithm wants), its own
        models' outputs (`forward_extras`), `compute_loss`."""
        logprobs, entropy = prefix.logprobs(self, self.policy, micro, with_entropy=True)  # rlvr/prefix.py
        if micro.old_logprobs is None:  # the first minibatch, on-policy: its own log-probs (rlvr/fused.py)
            micro.old_logprobs = logprobs.detach()
        if not self.algorithm.wants_entropy_grad:
            entropy = entropy.detach()
        return self.algorithm.compute_loss(micro, logprobs, entropy=entropy, **self.algorithm.forward_extras(micro))

    # ------------------------------------------------------------ services for algorithms

    def prepare_model(
        self, model: torch.nn.Module, lr: float | None = None, name: str | None = None
    ) -> torch.nn.Module:
        """Hand a model to accelerate; returns it prepared. With `lr` it is trained like the
        policy: its own AdamW (train.betas, train.weight_decay) and warm-up, train mode and
        gradient sync in the update, clipped (train.grad_clip) and stepped with the policy,
        saved in checkpoints and restored on resume; its dropout zeroed unless model.dropout=keep,
        and in eval mode for `forward` passes; its grad norm logged as `<name>/grad_norm`. Without `lr` it is
        frozen: no grad, eval mode, on the device, not checkpointed (it cannot change)."""
        acc, t = self.accelerator, self.cfg.train
        if lr is None:
            if fsdp.is_fsdp(acc):  # sharded like the policy, outside the checkpoints (rlvr/fsdp.py)
                return fsdp.shard_frozen(acc, model)
            engine = zero.frozen(model, acc)  # ZeRO-3: partitioned like the policy; else a replica
            return model.requires_grad_(False).eval().to(acc.device) if engine is None else engine
        zero.check_trained(acc, len(self.trained), self.cfg.algorithm.name)
        if self.cfg.model.dropout == "off":
            disable_dropout(model)
        model, opt = acc.prepare(
            model,
            torch.optim.AdamW(  # trainable parameters only: LoRA's adapters, not the frozen base
                [p for p in model.parameters() if p.requires_grad], lr=lr, betas=t.betas, weight_decay=t.weight_decay
            ),
        )
        # stepped by hand on sync steps: a prepared scheduler steps once per process
        warm = lambda s: min(1.0, (s + 1) / t.warmup_steps) if t.warmup_steps else 1.0
        self.trained.append(model)
        self.trained_names.append(name or ("policy" if len(self.trained) == 1 else f"model{len(self.trained) - 1}"))
        self.optimizers.append(opt)
        self.schedulers.append(Schedule(zero.torch_optimizer(opt), warm))
        return model

    def reference_model(self) -> torch.nn.Module:
        """The frozen reference policy of a KL term: the base model loaded again and frozen, or with
        model.lora the policy itself with its adapters disabled (rlvr/lora.py: no second copy)."""
        if self.cfg.model.lora:
            return lora.adapters_off(self.accelerator.unwrap_model(self.policy))
        model, _ = load_model_and_tokenizer(self.model_path, self.cfg.model.dtype)
        return self.prepare_model(model)

    def sampling(self) -> Sampling:
        """The training sampling settings (the rollout: section)."""
        r = self.cfg.rollout
        return Sampling(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, max_new_tokens=r.max_new_tokens)

    def rollout(self, problems: list[Problem], n: int, sampling: Sampling, engine=None) -> RolloutBatch:
        """n responses to each problem from the current policy (or from `engine`, the algorithm's
        `rollout_engine` when collecting), on this process's device. The engine draws from torch's
        global generator, which `collect` seeds per step and round."""
        with self.timer("generate"):
            batch = (engine or self.engine).generate(problems, n, sampling).to(self.accelerator.device)
        self.timer.count_tokens(batch.response_lengths.sum())
        return batch

    def score(self, batch: RolloutBatch) -> dict[str, float]:
        """The verifiers' rewards into `batch.scores` and `batch.rewards`, then the algorithm's
        `after_scoring` (reward shaping) on `batch.rewards`; returns the verifiers' metrics."""
        done = max(self.step - 1, 0)  # optimizer steps done: TRL's trainer_state.global_step
        state = TrainerState(
            global_step=done,
            max_steps=self.cfg.train.steps,
            epoch=done * self.cfg.train.prompts_per_step / max(len(self.train_problems), 1),
            is_local_process_zero=self.accelerator.is_local_main_process,
            is_world_process_zero=self.accelerator.is_main_process,
        )
        with self.timer("reward"):  # completion_ids and trainer_state: what TRL reward functions also take
            ids = completion_id_lists(batch)
            rewards, info = self.rewards(batch.problems, batch.completions, completion_ids=ids, trainer_state=state)
        batch.scores = rewards.to(self.accelerator.device)
        batch.rewards = rewards.to(self.accelerator.device)
        self.algorithm.after_scoring(batch)
        return info

    @torch.no_grad()
    def forward(self, fn, batch: RolloutBatch) -> torch.Tensor:
        """fn(micro-batch) over train.micro_batch_size micro-batches of `batch`, without grad and with
        every model in eval mode (old and reference log-probs, values: the same numbers whether or not
        an update ran before, as a resumed run needs), joined along the batch: [B, ...]."""
        with self.eval_mode():
            return torch.cat([fn(mb) for mb in self.micro_batches(batch, self.cfg.train.micro_batch_size)])

    @contextlib.contextmanager
    def eval_mode(self):
        """The trained models in eval mode inside, their modes restored after."""
        modes = [m.training for m in self.trained]
        for m in self.trained:
            m.eval()
        try:
            yield
        finally:
            for m, was in zip(self.trained, modes, strict=True):
                m.train(was)

    def logprobs(self, model: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
        """Log-probs [B, R] of the responses under `model` at the sampling temperature, no grad."""
        return self.forward(lambda mb: prefix.logprobs(self, model, mb)[0], batch)  # prompts shared (rlvr/prefix.py)

    # ------------------------------------------------------------ helpers

    @contextlib.contextmanager
    def sync_if(self, last: bool):
        """Accumulate gradients locally unless this is the minibatch's last micro-batch."""
        acc = self.accelerator
        acc.gradient_state._set_sync_gradients(last)  # DeepSpeed takes its accumulation boundary from this
        with contextlib.ExitStack() as stack:
            if not last:
                for m in self.trained:
                    stack.enter_context(acc.no_sync(m))
            yield
        acc.gradient_state._set_sync_gradients(True)

    def _check_batch_shape(self, world: int) -> None:
        t = self.cfg.train
        if t.prompts_per_step % world:
            raise ConfigError(f"train.prompts_per_step={t.prompts_per_step} must be divisible by the {world} processes")
        local = t.prompts_per_step // world * self.cfg.rollout.n
        if t.minibatches > local:
            raise ConfigError(f"train.minibatches={t.minibatches} exceeds the {local} samples per process")
        if t.prompts_per_step > len(self.train_problems):
            raise ConfigError(
                f"train.prompts_per_step={t.prompts_per_step} exceeds the {len(self.train_problems)} "
                "training problems (data.train_size)"
            )

    @staticmethod
    def micro_batches(batch: RolloutBatch, size: int):
        for s in range(0, len(batch), size):
            yield batch.select(list(range(s, min(s + size, len(batch)))))

    def _min_over_processes(self, x: int) -> int:
        t = torch.tensor([float(x)])
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        return int(t.item())

    def mean_over_processes(self, metrics: dict[str, float]) -> dict[str, float]:
        if not metrics or self.world == 1:
            return metrics
        keys = sorted(metrics)
        t = all_reduce_sum(torch.tensor([metrics[k] for k in keys], dtype=torch.float64)) / self.world
        return dict(zip(keys, t.tolist(), strict=True))

    def batch_metrics(self, batch: RolloutBatch) -> dict[str, float]:
        """Rollout statistics over all processes."""
        r = batch.rewards.double().cpu()
        lens = batch.response_lengths.double().cpu()
        s = all_reduce_sum(
            torch.stack(
                [
                    torch.tensor(float(len(r)), dtype=torch.float64),
                    r.sum(),
                    lens.sum(),
                    batch.truncated.double().sum().cpu(),
                ]
            )
        )
        n = s[0]
        return {
            "reward/mean": float(s[1] / n),
            "reward/std": float(batch_std(batch.rewards.double())),  # Bessel, over all processes: the one reward std
            "response_len/mean": float(s[2] / n),
            "response/truncated_frac": float(s[3] / n),
        }

    def progress(self, it):
        if not (self.cfg.tracking.progress and self.accelerator.is_main_process):
            return it
        from tqdm.auto import tqdm

        return tqdm(it, desc="rlvr train", initial=self.start_step, total=self.cfg.train.steps, dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, float], bar=None) -> None:
        acc = self.accelerator
        # 7 significant digits, not 6 decimals: an lr of 1e-7 or a KL of 3e-8 must not be logged as 0
        row = {
            "step": step,
            **{k: (float(f"{v:.7g}") if isinstance(v, float) and math.isfinite(v) else v) for k, v in metrics.items()},
        }
        if acc.is_main_process:
            ckpt.append_jsonl(self.out / "metrics.jsonl", row)  # strict JSON: a non-finite value is null
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(
                    reward=f"{metrics.get('reward/mean', float('nan')):.3f}",
                    loss=f"{metrics.get('loss', 0):.4f}",
                    tok_s=f"{metrics.get('time/tokens_per_s', 0):.0f}",  # generated tokens/s (rlvr/timing.py)
                )
        if self.cfg.tracking.report_to:
            acc.log(metrics, step=step)

    def write_run_files(self) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            with ckpt.write_errors(self.out):
                self.out.mkdir(parents=True, exist_ok=True)
            ckpt.lock_run_dir(self.out)  # one run per directory, before anything in it is written
            ckpt.clean_stale(self.out)  # what a killed run left half-written
            if self.overwrite and (gone := rundir.remove_run(self.out)):
                print(f"rlvr: --overwrite: deleted the previous run's {', '.join(gone)} in {self.out}")
            resolved = self.cfg.model_copy(deep=True)
            resolved.algorithm = self.algorithm.config.model_dump(mode="json")
            ckpt.write_atomic(self.out / "config.yaml", to_yaml(resolved))
        if self.cfg.tracking.report_to:
            acc.init_trackers(
                self.cfg.tracking.project,
                config=flat_config(json.loads(self.cfg.model_dump_json())),
                init_kwargs={"wandb": {"dir": str(self.out), "name": self.out.name}},
            )
        acc.wait_for_everyone()

    # ------------------------------------------------------------ eval

    def eval_settings(self, final: bool = False) -> "EvalSettings":
        """The eval: section's settings, lengths and batch sizes from rollout: (the full eval: final_n)."""
        return self.cfg.eval.settings(self.cfg.rollout, final=final)

    def evaluate(self, step: int, tag: str) -> dict[str, Any]:
        """Held-out pass@k (and dSE, k*, coverage against the base when the base's samples are
        cached), by rlvr.eval.evaluate on every process's share. At step 0 the policy is the base:
        its samples are the base's cached ones. Appends a row to evals.jsonl."""
        from rlvr.eval import evaluate
        from rlvr.eval.passk import mean_pass_at_k

        e = self.cfg.eval
        settings = self.eval_settings().model_copy(update={"perplexity": False})
        with sharding.full_params(self.accelerator, self.policy):  # ZeRO-3, FSDP2: processes generate unequal counts
            r = evaluate(
                self.eval_problems,
                settings,
                self.rewards,
                model=self.engine,
                base=self.model_path,
                model_is_base=tag == "base",
                sample_base=False,
                label=tag,
                desc=f"eval {tag}",
                rank=self.rank,
                world=self.world,
                progress=self.cfg.tracking.progress,  # a second bar under the training one, gone when done
                maj=False,
            )
        m = r["model_metrics"]
        n, c = np.array(m["counts"]["n"]), np.array(m["counts"]["c"])
        result: dict[str, Any] = {"step": step, "tag": tag, "problems": m["problems"], "n": settings.n}
        for k in e.ks:
            result[f"pass@{k}"] = round(mean_pass_at_k(n, c, k), 6)
        result["reward/mean"] = m["mean_reward"]
        if "comparison" in r:
            comp = r["comparison"]
            result.update(
                {
                    f"dSE@{comp['K']}": round(comp["dse"]["dse"], 6),
                    "crossover_k": comp["crossover_k"],
                    "gained": comp["coverage"]["model_only"],
                    "lost": comp["coverage"]["base_only"],
                }
            )
        self.eval_results.append(result)
        if self.accelerator.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / "evals.jsonl", "a") as f:
                f.write(json.dumps(result) + "\n")
        if self.cfg.tracking.report_to:
            self.accelerator.log(
                {
                    f"eval/{k}": v
                    for k, v in result.items()
                    if isinstance(v, (int, float)) and k not in ("step", "problems", "n")
                },
                step=step,
            )
        return result

    def full_eval(self) -> None:
        """The complete eval of the final policy against the base (what `rlvr eval` writes), by
        rlvr.eval.evaluate on every process's share, written to output_dir/eval."""
        from rlvr.eval import evaluate

        self.accelerator.wait_for_everyone()
        with sharding.full_params(self.accelerator, self.policy):  # ZeRO-3, FSDP2: processes generate unequal counts
            evaluate(
                self.eval_problems,
                self.eval_settings(final=True),
                self.rewards,
                model=self.engine,
                base=self.model_path,
                out_dir=self.out / "eval",
                label="final",
                model_path=str(self.out / "final"),
                rank=self.rank,
                world=self.world,
                device=str(self.accelerator.device),
                dtype=self.cfg.model.dtype,
                progress=self.cfg.tracking.progress,
            )
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------ checkpoints

    def checkpoint_dirs(self) -> list[Path]:
        """The complete checkpoints (every file there, trainer_state.json readable), oldest first."""
        return [c.path for c in ckpt.complete_checkpoints(self.out / "checkpoints")]

    def maybe_checkpoint(self, step: int) -> None:
        c = self.cfg.checkpoint
        if not c.every or step % c.every or step == self.cfg.train.steps:
            return
        self.save_checkpoint(step)

    def save_checkpoint(self, step: int) -> None:
        """A resumable checkpoint of the state after `step` steps, now, on every process together:
        written aside and renamed into checkpoints/step-N, never with non-finite weights (rlvr/checkpoint.py)."""
        state = {"schedulers": [s.state_dict() for s in self.schedulers], "algorithm": self.algorithm.state_dict()}
        models = [self.accelerator.unwrap_model(m) for m in self.trained]
        extra = lora.save_state_kwargs(self.accelerator, self.cfg.model.lora)  # ZeRO-2 + LoRA: adapters only
        ckpt.save_checkpoint(self.accelerator, self.out, step, state, models, self.cfg.checkpoint.keep, extra)

    def maybe_resume(self) -> None:
        """Load the newest checkpoint that is complete and loads (a broken one is skipped with a warning
        naming it); keep the metrics and evals rows up to its step, a torn last line dropped."""
        if not self.cfg.checkpoint.resume:
            return
        main = self.accelerator.is_main_process
        tried = []
        for c in reversed(ckpt.complete_checkpoints(self.out / "checkpoints", report=main)):
            try:
                extra = lora.load_state_kwargs(self.accelerator, self.cfg.model.lora)  # ZeRO-2 + LoRA: adapters
                self.accelerator.load_state(str(c.path), **extra)
            except Exception as e:  # a file torn inside though its size is right: the next older one
                tried.append(c.path)
                if main:
                    ckpt.warn(f"skipping checkpoint {c.path}: it does not load ({type(e).__name__}: {str(e)[:120]})")
                continue
            for s, sd in zip(self.schedulers, c.state["schedulers"], strict=True):
                s.load_state_dict(sd)
            if "algorithm" in c.state:  # the algorithm's own state (an adaptive KL coefficient)
                self.algorithm.load_state_dict(c.state["algorithm"])
            self.start_step = c.step
            if main:
                for name in ("metrics.jsonl", "evals.jsonl"):
                    ckpt.repair_jsonl(self.out / name, self.start_step)
                print(f"rlvr: resuming from {c.path} (step {self.start_step})")
            return
        if tried:  # a failed load may have changed some weights: starting afresh from them would be wrong
            raise ckpt.RunError(f"no checkpoint in {self.out / 'checkpoints'} loads; move it away to start afresh")

    def save_final(self) -> None:
        """The policy and tokenizer into final/, written aside and renamed; never non-finite weights."""
        save = lora.save_final if self.cfg.model.lora else ckpt.save_final  # LoRA: merged model + final/adapter
        save(self.accelerator, self.policy, self.tokenizer, self.out, self.cfg.train.steps)

    def release_run_dir(self) -> None:
        """Give up the output_dir lock before the process ends (it is dropped at exit anyway)."""
        if self.accelerator.is_main_process:
            ckpt.unlock_run_dir(self.out)
