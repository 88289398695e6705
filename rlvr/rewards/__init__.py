"""Verifiable rewards: a float per (problem, completion), one interface for training and eval.

A reward function takes the batch's problems and completions and returns one
score per sample (`RewardFn`). The `reward:` config section names any number of
them, built in or imported by path, and `build_reward` sums them with weights;
each is logged on its own as `reward/<name>`.

Built in:

* `reasoning_gym`: the task's own reasoning-gym `score_answer`.
* `math_accuracy`: Hugging Face math-verify, `verify(parse(gold), parse(answer))`
  (gold first: the order matters), `\\boxed{}` preferred; under a template whose
  answer style (`templates.ANSWER_STYLE`) is the <answer> tag (r1), the answer is
  the tag's, a bare one read as if boxed (`math_answer`), and a text gold (`yes`,
  `\\text{even}`) is compared as words. math-verify bounds its time with
  `signal.alarm`, which only works on the main thread, so its timeouts are off and
  grading runs in a pool of worker processes instead (`rlvr.workers.WorkerPool`);
  a grade past `reward.timeout` is killed. Each distinct answer of a problem in a batch is
  graded once (`mathgrade.Grades`), keyed by the match math-verify's parse reads first (the
  string it converts): the grade equals math-verify's on each sample alone.
* `math_format`: the answer is where the template asked for it: a non-empty
  `\\boxed{}`, or (tag style) `<think>...</think> <answer>...</answer>`.
* `code_tests`: the program in the completion (its last ```python block, else
  the whole text) run against the problem's tests in `rlvr.sandbox`; 1 when
  every test passes.
* `module.path:function`: any TRL-convention reward function,
  `f(prompts, completions, **columns) -> list[float | None]`; the columns are
  `answer`, `tests`, `entry` (reasoning-gym) and `data.extra_columns` (answer and tests
  also under their file's column names), and it gets TRL 1.16's other keywords too:
  `completion_ids`, `trainer_state`, `log_extra`, `log_metric`; under the chat template
  TRL's conversational format (`adapter`). trl's own (`trl.rewards:accuracy_reward`) work.

A verifier that raises or times out on a sample, or returns for it something other
than a finite number or None (a string, nan, inf), scores 0 for that sample and is
counted (`reward/errors`, `reward/timeouts`); its first traceback is shown once. A
reward that failed on every sample of a batch (or on `reward.stop_error_frac` of them),
or a user's function that failed on any sample of its first call (a wrong signature, a
missing column), stops the run with one line naming it (`rlvr.errors.RewardError`). A
function by import path runs in a worker process, so `reward.timeout` bounds each call.
None (TRL's "no opinion") adds nothing to the weighted sum.

The modules: `extract` (where the answer is), `mathgrade` (math-verify grading),
`verifiers` (reasoning_gym, math_accuracy, math_format), `codetests`, `adapter`
(functions as rewards), `config` (the section, the registry, `build_reward`),
`runner` (the weighted sum, failure isolation, metrics), `shaping` (overlong penalty).
"""

from __future__ import annotations

from rlvr.rewards.adapter import CallableReward
from rlvr.rewards.base import Reward, RewardFn, Scored
from rlvr.rewards.codetests import build_program
from rlvr.rewards.config import (
    RewardConfig,
    RewardFunctionConfig,
    build_reward,
    natural_reward,
)
from rlvr.rewards.extract import (
    answer_style,
    answer_tag,
    extract_code,
    last_boxed,
    math_answer,
)
from rlvr.rewards.mathgrade import gold_problem, verify_math
from rlvr.rewards.runner import RewardRunner, WeightedReward
from rlvr.rewards.shaping import overlong_penalty
from rlvr.rewards.verifiers import reasoning_gym_reward

__all__ = [
    "CallableReward",
    "Reward",
    "RewardConfig",
    "RewardFn",
    "RewardFunctionConfig",
    "RewardRunner",
    "Scored",
    "WeightedReward",
    "answer_style",
    "answer_tag",
    "build_program",
    "build_reward",
    "extract_code",
    "gold_problem",
    "last_boxed",
    "math_answer",
    "natural_reward",
    "overlong_penalty",
    "reasoning_gym_reward",
    "verify_math",
]
