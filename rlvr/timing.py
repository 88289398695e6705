"""Where a step's time goes: wall-clock seconds per named phase, and generated tokens per second.

The trainer starts a `StepTimer` at the top of each step and wraps each phase in `with timer("generate"):`
(the engine), `"reward"` (the verifiers), `"logprobs"` (old, reference and critic passes), `"update"` (the
optimizer steps) and `"eval"` (an in-training eval). Phases are exclusive: one entered inside another stops
the outer one's clock until it ends (an algorithm that samples inside its log-prob hook counts as
generating then), so the phases never overlap and their sum is at most the step's wall time; what is
left (advantages, bookkeeping, weight sync) is in time/step only.

`metrics()` gives time/<phase> for every phase in PHASES (0 when it did not run this step) and time/step,
each the mean over processes, and time/tokens_per_s: the tokens the engine generated this step on every
process (every generation round and extra sampling pass), per second of the step outside its eval.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch

from rlvr.losses import all_reduce_sum

PHASES = ("generate", "reward", "logprobs", "update", "eval")


class StepTimer:
    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.start()

    def start(self) -> None:
        """A new step: phase times and the token count back to 0, the step clock from now."""
        self.seconds: dict[str, float] = {}
        self.tokens = 0
        self._t0 = self.clock()
        self._open: list[list] = []  # [phase, start of its current slice], innermost last

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        if phase not in PHASES:  # every process must report the same phases (metrics() is a collective)
            raise ValueError(f"unknown phase {phase!r}; known: {', '.join(PHASES)}")
        now = self.clock()
        if self._open:  # the enclosing phase's clock stops here
            outer = self._open[-1]
            self._add(outer[0], now - outer[1])
        entry = [phase, now]
        self._open.append(entry)
        try:
            yield
        finally:
            now = self.clock()
            self._open.pop()  # `with` blocks close innermost first: this is `entry`
            self._add(phase, now - entry[1])
            if self._open:  # and starts again
                self._open[-1][1] = now

    def _add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def count_tokens(self, n: int) -> None:
        """Tokens the engine generated (time/tokens_per_s)."""
        self.tokens += int(n)

    def metrics(self) -> dict[str, float]:
        """time/<phase> for every phase, time/step and time/tokens_per_s, over every process (a collective:
        every process calls it)."""
        names = PHASES
        step = self.clock() - self._t0
        local = [self.seconds.get(p, 0.0) for p in names] + [step, float(self.tokens), 1.0]
        total = all_reduce_sum(torch.tensor(local, dtype=torch.float64)).tolist()
        world = total[-1]
        out = {f"time/{p}": total[i] / world for i, p in enumerate(names)}
        out["time/step"] = total[-3] / world
        busy = out["time/step"] - out["time/eval"]  # an eval's sampling is other work: no dip on eval steps
        out["time/tokens_per_s"] = total[-2] / busy if busy > 0 else 0.0
        return out
