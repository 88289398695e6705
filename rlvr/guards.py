"""What keeps a run honest when things go wrong, mixed into the Trainer (rlvr/trainer.py).

Split out of the trainer to keep it readable; the Trainer's attributes these methods read are
`cfg`, `out`, `step`, `signalled`, `world`, `accelerator`, `policy`, `trained`, `optimizers`,
`schedulers` and `save_checkpoint`.

- Non-finite steps: `skip_nonfinite` (a non-finite loss or gradient norm on any process skips the
  optimizer step everywhere and counts it in the `Schedule`; train.max_skipped_steps in a row stop
  the run), `check_weights` (a non-finite weight after a step stops it), `check_uniform` (a policy
  destroyed into the uniform distribution stops it).
- Stopping: `stop_signals` / `stop_if_signalled` (SIGTERM/SIGINT checkpoint at the end of the step and
  exit 128 + N), `die_with_launcher` (workers end with their launcher).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
from typing import Any

import torch

from rlvr import checkpoint as ckpt
from rlvr import fsdp, sharding, zero
from rlvr.errors import RunError
from rlvr.losses import all_reduce_sum

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # checkpoint at the end of the step, then exit 128 + signum


class Schedule(torch.optim.lr_scheduler.LambdaLR):
    """The warm-up schedule of one trained model, which also counts the optimizer steps skipped for a
    non-finite loss or gradient (all, and in a row): a skipped step does not advance the schedule
    (warm-up counts optimizer steps taken), and the counts ride in its state_dict, so a resumed run
    logs the same train/skipped_steps (a checkpoint without them starts them at 0)."""

    def __init__(self, optimizer: Any, lr_lambda: Any) -> None:
        self.skipped = 0
        self.skipped_in_a_row = 0
        super().__init__(optimizer, lr_lambda)


def grad_norm(model: torch.nn.Module) -> torch.Tensor:
    """The global L2 norm of `model`'s gradients (what clipping computes), when nothing clips them."""
    grads = [p.grad.detach().float() for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def die_with_launcher() -> None:
    """A worker started by a launcher (accelerate, torchrun: LOCAL_RANK set) gets SIGTERM when the
    launcher dies, so a killed launcher leaves no workers training on (each worker sits in its own
    session, out of reach of the launcher's terminal). Linux only (prctl PR_SET_PDEATHSIG); a launcher
    that died before the call is caught by the parent having changed since the process started."""
    if "LOCAL_RANK" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = LAUNCHER_PID
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died between rlvr's import and prctl (a launcher may be PID 1: no ==1 test)
        os.kill(os.getpid(), signal.SIGTERM)


LAUNCHER_PID = os.getppid()  # the parent when rlvr was imported, before prctl: the race check's reference


class RunGuards:
    """The Trainer's guards (module docstring)."""

    @contextlib.contextmanager
    def stop_signals(self):
        """SIGTERM (what SLURM and launchers send) and SIGINT only note the signal while steps run:
        the step finishes and `stop_if_signalled` checkpoints and exits. A second SIGINT exits at once
        (KeyboardInterrupt). Outside the loop, and off the main thread, signals act as usual."""
        self.signalled = 0
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def note(signum, frame):
            if self.signalled and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.signalled = self.signalled or signum

        before = {s: signal.signal(s, note) for s in STOP_SIGNALS}
        try:
            yield
        finally:
            for s, h in before.items():
                signal.signal(s, h)

    def stop_if_signalled(self, step: int) -> None:
        """At the end of a step: if any process got SIGTERM/SIGINT, all of them (they agree by an
        all-reduce) save a checkpoint of this step (even with checkpoint.every=0), say how to resume,
        and exit with 128 + the signal's number: not 0, so a scheduler or a dependent job does not take
        the run for finished (SLURM requeue does not depend on it; a job script can requeue on 143)."""
        signum = self.signalled
        if self.world > 1:
            t = torch.tensor([float(signum)])
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            signum = int(t.item())
        if not signum:
            return
        c = self.cfg.checkpoint
        if not (c.every and step % c.every == 0 and step != self.cfg.train.steps):  # maybe_checkpoint's
            self.save_checkpoint(step)
        if self.accelerator.is_main_process:
            print(
                f"rlvr: stopped by {signal.Signals(signum).name} at step {step}; checkpoint at "
                f"{self.out / 'checkpoints' / f'step-{step}'}; rerun the same command to resume",
                file=sys.stderr,
                flush=True,
            )
        self.accelerator.end_training()
        raise SystemExit(128 + signum)

    def skip_nonfinite(self, loss: float, norms: list[Any]) -> bool:
        """Whether this optimizer step is skipped: its loss or any model's gradient norm is non-finite
        on some process (one NaN sample would otherwise poison every weight). Every process agrees by
        an all-reduce; a skipped step drops the gradients, leaves weights, optimizer state and schedule
        as they were, and is counted; train.max_skipped_steps in a row stop the run with the reason."""
        local = [float(not math.isfinite(loss)), float(not all(math.isfinite(float(n)) for n in norms))]
        bad_loss, bad_grad = (float(x) > 0 for x in all_reduce_sum(torch.tensor(local, dtype=torch.float64)))
        for s in self.schedulers:
            s.skipped_in_a_row = s.skipped_in_a_row + 1 if bad_loss or bad_grad else 0
        if not (bad_loss or bad_grad):
            return False
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        for s in self.schedulers:
            s.skipped += 1
        what, limit = "loss" if bad_loss else "gradient", self.cfg.train.max_skipped_steps
        row = self.schedulers[0].skipped_in_a_row
        if row >= limit:
            raise RunError(
                f"step {self.step}: {row} optimizer steps in a row had a non-finite {what} and were skipped "
                f"(train.max_skipped_steps={limit}); the run stops here (check the reward and train.lr)"
            )
        if self.accelerator.is_main_process:
            ckpt.warn(f"step {self.step}: non-finite {what}; optimizer step skipped ({row} in a row)")
        return True

    def check_uniform(self, metrics: dict[str, float]) -> None:
        """Stop when the policy's entropy (measured in this step's update) is ln |V|: uniform over the
        whole vocabulary, its gradient zero, a model a too-large step destroyed with finite weights
        (train.lr=1e6); a run that went on would end "successfully" with it. No model starts there."""
        vocab = zero.full_shape(sharding.unwrap(self.accelerator, self.policy).get_output_embeddings().weight)[0]
        entropy = metrics.get("entropy", 0.0)
        if math.isfinite(entropy) and entropy >= math.log(vocab) * (1 - 1e-4):
            raise RunError(
                f"step {self.step}: the policy's entropy is {entropy:.6g} = ln {vocab}, uniform over its vocabulary: "
                f"an update destroyed the model (train.lr={self.cfg.train.lr:g} too large?); the run stops here"
            )

    def check_weights(self) -> None:
        """Stop the run at the first optimizer step that leaves a non-finite weight (a finite loss and
        gradient can still overflow, e.g. train.lr=1e6), naming the parameter; never train on it."""
        bad = fsdp.first_nonfinite([sharding.unwrap(self.accelerator, m) for m in self.trained])  # else zero's
        if bad is not None:
            name = bad[1]
            raise RunError(
                f"step {self.step}: parameter {name} is non-finite after the optimizer step "
                f"(train.lr={self.cfg.train.lr:g}); the run stops here, nothing of it is saved"
            )
