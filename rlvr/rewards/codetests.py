"""The `code_tests` reward: the completion's program run against the problem's tests.

Stdin/stdout cases run the program in `rlvr.sandbox` and compare its output here;
function tests (HumanEval's `check`, assert lists) are decided by `rlvr.judge`.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from rlvr.rewards.base import Reward, Scored
from rlvr.rewards.extract import extract_code
from rlvr.tasks import Problem


def build_program(problem: Problem, completion: str) -> str:
    """Solution + tests as one Python program (tests given as source or as a list of asserts).

    A problem with `code_prefix` (HumanEval's function header) has it put before
    the code, so both a bare body and a whole function work. Tests that define
    HumanEval's `check` are called on `entry_point` when they do not call it.
    """
    program, tests = _program_and_tests(problem, completion)
    return program + "\n\n" + tests + "\n"


def _program_and_tests(problem: Problem, completion: str) -> tuple[str, str]:
    code, fenced = extract_code(completion)
    meta = problem.metadata
    prefix = meta.get("code_prefix") or ""
    program = (prefix + "\n" + code) if (prefix and fenced) else prefix + code
    tests = meta.get("tests")
    if isinstance(tests, list):
        tests = "\n".join(tests)
    entry = meta.get("entry_point")
    if entry and "def check(" in tests and not re.search(r"^check\(", tests, re.M):
        tests += f"\n\ncheck({entry})\n"
    return program, tests


class _CodeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout: float | None = Field(None, gt=0.0, description="wall-clock seconds per program; default reward.timeout")
    memory_mb: int = Field(
        1024,
        ge=64,
        description="memory for the program's whole process tree, MiB (each "
        "process gets memory_mb / max_processes of address space)",
    )
    max_processes: int = Field(8, ge=1, description="processes and threads the program may have")
    builtin_results: bool = Field(
        True,
        description="function tests (HumanEval check, assert lists) run in a trusted judge outside the sandbox; "
        "arguments and results cross as builtin types only (an object overriding == cannot pass). "
        "false: the tests run inside the sandbox with the program, for arguments or results of "
        "other types (classes, numpy); weaker: a program that tampers with the interpreter (its "
        "frames, builtins) can forge a pass",
    )


class CodeTests(Reward):
    Options = _CodeOptions
    needs = "tests"

    def score(self, problems: list[Problem], completions: list[str]) -> Scored:
        """1 when every test passed: stdout compared here, function tests decided by rlvr.judge."""
        from concurrent.futures import ThreadPoolExecutor

        from rlvr.judge import check_function, run_inside
        from rlvr.sandbox import isolation, run_program

        o = self.options
        limits = {"timeout": o.timeout or self.ctx.timeout, "memory_mb": o.memory_mb, "max_processes": o.max_processes}
        runs: list[Callable[[], Any]] = []
        owner: list[int] = []
        expected: list[str | None] = []
        out = Scored([0.0] * len(completions))
        for i, (p, c) in enumerate(zip(problems, completions, strict=True)):
            tests = p.metadata.get("tests")
            if isinstance(tests, list) and tests and isinstance(tests[0], dict):  # stdin/stdout cases
                code = extract_code(c)[0]
                for case in tests:
                    runs.append(functools.partial(run_program, code, stdin=str(case["input"]), **limits))
                    owner.append(i)
                    expected.append(str(case["output"]))
                continue
            program, tests = _program_and_tests(p, c)
            if o.builtin_results:
                runs.append(
                    functools.partial(
                        check_function,
                        program,
                        tests,
                        prefix=p.metadata.get("code_prefix") or "",
                        entry_point=p.metadata.get("entry_point"),
                        **limits,
                    )
                )
            else:
                runs.append(functools.partial(run_inside, program, tests, **limits))
            owner.append(i)
            expected.append(None)
        isolation()  # probe once, not in every thread
        with ThreadPoolExecutor(max(1, min(self.ctx.workers, len(runs))), thread_name_prefix="rlvr-code") as pool:
            results = list(pool.map(lambda run: run(), runs))
        passed = [True] * len(completions)
        timed_out = [False] * len(completions)
        for i, want, r in zip(owner, expected, results, strict=True):
            ok = r.passed and (want is None or _same_output(r.stdout, want))
            passed[i] = passed[i] and ok
            if r.status == "timeout":
                timed_out[i] = True
            elif r.status == "error":  # the sandbox failed, not the program
                out.errors += 1
                out.tracebacks.append(r.stderr)
        out.scores = [float(p) for p in passed]
        out.timeouts = sum(timed_out)
        return out


def _same_output(got: str, want: str) -> bool:
    norm = lambda s: [line.rstrip() for line in s.strip().splitlines()]
    return norm(got) == norm(want)
