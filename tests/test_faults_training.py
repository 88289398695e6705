"""Faults during training: a run killed (-9) at a random step resumes bitwise equal to an uninterrupted
one for every algorithm; a non-finite loss or gradient skips the optimizer step (too many in a row
stop the run); a non-finite weight stops it; SIGTERM checkpoints and exits; workers die with their
launcher. Tiny random models; the killed runs are subprocesses, the rest run in this process."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import helpers
from rlvr.algorithms.grpo import GRPO, GRPOConfig
from rlvr.config import load_config
from rlvr.errors import RunError
from rlvr.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
STEPS = 4
ALGORITHMS = {
    "grpo": {"name": "grpo"},
    "ppo": {"name": "ppo"},
    "rloo": {"name": "rloo"},
    "reinforce_pp": {"name": "reinforce_pp"},
    "remax": {"name": "remax"},
    "dapo": {"name": "dapo", "max_gen_batches": 2},
    "ppo-adaptive-kl": {"name": "ppo", "kl_coef": 0.05, "kl_target": 0.01, "kl_in": "reward"},
}


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    return helpers.make_random_model(tmp_path_factory.mktemp("model") / "m", hidden=16)


def config(path: Path, model: Path, algorithm: dict, **sections) -> Path:
    """A run of STEPS steps with a graded reward (spread in every group) and a critic-sized lr."""
    base = {
        "data": {"train_size": 16, "eval_size": 4},
        "algorithm": algorithm,
        "reward": {"functions": [{"name": "helpers:graded"}]},
        "train": {"steps": STEPS, "prompts_per_step": 2, "micro_batch_size": 4, "minibatches": 2, "lr": 1e-2},
        "checkpoint": {"every": 0},
    }
    return helpers.write_config(path, model, base, **sections)


def run_inprocess(cfg_path: Path, *overrides: str) -> Path:
    cfg = load_config(str(cfg_path), list(overrides))
    Trainer(cfg).fit()
    return Path(cfg.output_dir)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def rows(out: Path) -> list[dict]:
    f = out / "metrics.jsonl"
    lines = f.read_text().splitlines() if f.is_file() else []
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in lines if line]


def count_rows(out: Path) -> int:
    f = out / "metrics.jsonl"
    return f.read_bytes().count(b"\n") if f.is_file() else 0


def wait_for_rows(proc: subprocess.Popen, out: Path, k: int) -> None:
    """Until metrics.jsonl has k rows (or the process ended)."""
    while count_rows(out) < k and proc.poll() is None:
        time.sleep(0.02)


def assert_same_run(a: Path, b: Path) -> None:
    assert rows(a) == rows(b)
    wa, wb = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def kill_at_row(cmd: list[str], run_env: dict[str, str], out: Path, k: int) -> None:
    """Start `cmd`, SIGKILL it when out/metrics.jsonl has k rows."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=run_env, stdout=subprocess.DEVNULL)
    try:
        wait_for_rows(proc, out, k)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_kill9_at_a_random_step_resumes_exactly(tmp_path, random_model, name, capsys):
    """SIGKILL when metrics.jsonl has k >= 2 rows (k drawn per algorithm with a fixed seed), checkpoint.every=1;
    the rerun resumes from whichever checkpoint is complete and ends equal to an uninterrupted run: metrics
    rows (but time) and final weights, bitwise. Fails without eval-mode passes for PPO (its critic's dropout
    made the first step after a start differ) and without the adaptive KL coefficient in the checkpoint."""
    algorithm = ALGORITHMS[name]
    ref = run_inprocess(config(tmp_path / "ref.yaml", random_model, algorithm, output_dir=str(tmp_path / "ref")))
    cfg = config(
        tmp_path / "c.yaml", random_model, algorithm, output_dir=str(tmp_path / "run"), checkpoint={"every": 1}
    )
    k = random.Random(f"kill-{name}").randint(2, STEPS - 1)  # >= 2 rows: checkpoint step-1 is complete
    kill_at_row([sys.executable, "-m", "rlvr", "train", str(cfg)], env(), tmp_path / "run", k)
    assert not (tmp_path / "run" / "final").exists()
    capsys.readouterr()
    resumed = run_inprocess(cfg)
    assert "rlvr: resuming from " in capsys.readouterr().out  # not a fresh start, which would end the same
    assert_same_run(ref, resumed)


def launch2(cfg: Path, port: int) -> list[str]:
    cmd = [sys.executable, "-m", "rlvr", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]
    return [*cmd, "train", str(cfg)]


@pytest.mark.distributed
def test_kill9_under_two_processes_resumes_exactly(tmp_path, random_model):
    """PPO with the adaptive KL (a critic and algorithm state: the most to restore) under 2 processes,
    killed -9 (the launcher, so both workers) at a random step: the relaunch ends equal to an
    uninterrupted 2-process run, metrics rows (but time) and final weights bitwise."""
    algorithm = ALGORITHMS["ppo-adaptive-kl"]
    run_env = {**env(), "ACCELERATE_USE_CPU": "1"}
    ref = config(tmp_path / "ref.yaml", random_model, algorithm, output_dir=str(tmp_path / "ref"))
    subprocess.run(launch2(ref, 29551), cwd=ROOT, env=run_env, check=True, capture_output=True)
    cfg = config(
        tmp_path / "c.yaml", random_model, algorithm, output_dir=str(tmp_path / "run"), checkpoint={"every": 1}
    )
    k = random.Random("kill-2proc").randint(2, STEPS - 1)  # >= 2 rows: checkpoint step-1 is complete
    kill_at_row(launch2(cfg, 29553), run_env, tmp_path / "run", k)
    deadline = time.monotonic() + 120  # the workers die with the launcher (PR_SET_PDEATHSIG)
    while marked(str(cfg)) and time.monotonic() < deadline:
        time.sleep(0.1)
    r = subprocess.run(launch2(cfg, 29555), cwd=ROOT, env=run_env, check=True, capture_output=True, text=True)
    assert "rlvr: resuming from " in r.stdout  # not a fresh start, which would end the same
    assert_same_run(tmp_path / "ref", tmp_path / "run")


class NanConfig(GRPOConfig):
    nan_steps: list[int] = []
    nan_in: str = "loss"


class NanGRPO(GRPO):
    """GRPO whose loss (or only its gradient) is non-finite at the given steps, on every micro-batch."""

    Config = NanConfig
    step = 0

    def after_logprobs(self, batch, trainer) -> None:
        super().after_logprobs(batch, trainer)
        self.step = trainer.step

    def compute_loss(self, batch, logprobs, entropy=None, **extras):
        loss, metrics = super().compute_loss(batch, logprobs, entropy=entropy, **extras)
        if self.step in self.config.nan_steps:
            if self.config.nan_in == "loss":
                return loss * float("nan"), metrics
            return loss + (logprobs.sum() * 0).abs().sqrt(), metrics  # finite loss, NaN gradient (d sqrt(0))
        return loss, metrics


NAN = {"name": "test_faults_training:NanGRPO"}


def policy_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


@pytest.mark.parametrize("nan_in", ["loss", "grad"])
def test_nonfinite_step_is_skipped_and_counted(tmp_path, random_model, nan_in):
    """Step 2 non-finite: its optimizer steps are skipped (weights after step 2 equal those after step 1),
    counted in train/skipped_steps, and step 3 trains on. Without the guard, step 2 writes NaN weights."""
    algorithm = {**NAN, "nan_steps": [2], "nan_in": nan_in}
    cfg = config(tmp_path / "c.yaml", random_model, algorithm, train={"steps": 3}, checkpoint={"every": 1, "keep": 3})
    out = run_inprocess(cfg)
    r = rows(out)
    assert [x["train/skipped_steps"] for x in r] == [0, 2, 2]  # 2 minibatches: 2 optimizer steps skipped
    w1, w2 = (policy_weights(out / "checkpoints" / f"step-{s}") for s in (1, 2))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    w3 = load_file(out / "final" / "model.safetensors")
    assert any(not torch.equal(w2[k], w3[k]) for k in w2)
    assert all(bool(torch.isfinite(v).all()) for v in w3.values())


def test_nonfinite_steps_in_a_row_stop_the_run(tmp_path, random_model, capsys):
    """train.max_skipped_steps skipped in a row: exit 1, one line naming the step, the cause and the key."""
    from rlvr.cli import main

    cfg = config(tmp_path / "c.yaml", random_model, {**NAN, "nan_steps": [2, 3]}, train={"max_skipped_steps": 3})
    assert main(["train", str(cfg)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "rlvr: error: step 3: 3 optimizer steps in a row had a non-finite loss and were skipped "
        "(train.max_skipped_steps=3); the run stops here (check the reward and train.lr)"
    )
    assert not (tmp_path / "run" / "final").exists()


def test_nonfinite_weight_after_a_step_stops_the_run(tmp_path, random_model):
    """An optimizer step that leaves an inf weight (finite loss and gradient) stops the run naming the
    parameter; nothing is saved. Without check_weights the run would go on training on it."""
    cfg = load_config(str(config(tmp_path / "c.yaml", random_model, {"name": "grpo"})))
    trainer = Trainer(cfg)
    opt = trainer.optimizers[0]
    step = opt.step

    def poisoned(*a, **kw):
        out = step(*a, **kw)
        if trainer.step == 2:
            with torch.no_grad():
                next(trainer.policy.parameters())[0, 0] = float("inf")
        return out

    opt.step = poisoned
    with pytest.raises(RunError, match=r"^step 2: parameter model\.embed_tokens\.weight is non-finite after"):
        trainer.fit()
    assert not (tmp_path / "run" / "final").exists()


def test_sigterm_checkpoints_exits_and_resumes_exactly(tmp_path, random_model):
    """SIGTERM during step 2 with checkpoint.every=0: the step ends, a checkpoint of it is written, one line
    says how to resume, exit 143; the rerun ends equal to an uninterrupted run. Fails without the handler
    (killed silently, nothing saved, exit -15)."""
    ref = run_inprocess(
        config(tmp_path / "ref.yaml", random_model, ALGORITHMS["ppo"], output_dir=str(tmp_path / "ref"))
    )
    cfg = config(tmp_path / "c.yaml", random_model, ALGORITHMS["ppo"], output_dir=str(tmp_path / "run"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlvr", "train", str(cfg)],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_rows(proc, tmp_path / "run", 1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    n = count_rows(tmp_path / "run")
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert 1 <= n < STEPS
    ckpt = tmp_path / "run" / "checkpoints" / f"step-{n}"
    assert err.strip().splitlines()[-1] == (
        f"rlvr: stopped by SIGTERM at step {n}; checkpoint at {ckpt}; rerun the same command to resume"
    )
    assert (ckpt / "trainer_state.json").is_file()
    assert_same_run(ref, run_inprocess(cfg))


def test_second_sigint_interrupts_at_once(tmp_path, random_model):
    """Inside the step loop the first SIGINT is noted (the step finishes), a second raises KeyboardInterrupt;
    outside it SIGINT acts as usual again."""
    trainer = Trainer(load_config(str(config(tmp_path / "c.yaml", random_model, {"name": "grpo"}))))
    with trainer.stop_signals():
        os.kill(os.getpid(), signal.SIGINT)
        assert trainer.signalled == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def marked(marker: str) -> list[int]:
    """Processes whose command line holds `marker`."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker.encode() in (p / "cmdline").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


@pytest.mark.distributed
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_exit_when_the_launcher_is_killed(tmp_path, random_model):
    """kill -9 of `accelerate launch` (2 processes): both workers end (they got SIGTERM from the kernel via
    PR_SET_PDEATHSIG); without it they train on, orphaned, in their own sessions."""
    cfg = config(tmp_path / "c.yaml", random_model, {"name": "grpo"}, train={"steps": 100000})
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29531"]
    launcher = subprocess.Popen(
        [*cmd, "-m", "rlvr", "train", str(cfg)],
        cwd=ROOT,
        env={**env(), "ACCELERATE_USE_CPU": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = str(cfg)
    try:
        wait_for_rows(launcher, tmp_path / "run", 1)
        workers = [p for p in marked(marker) if p != launcher.pid]
        assert launcher.poll() is None and len(workers) == 2
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 120  # a generous bound for a loaded machine, not a timing claim
        while marked(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marked(marker) == []
    finally:
        launcher.kill()
        for pid in marked(marker):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.distributed
def test_rlvr_launch_names_a_worker_killed_by_a_signal(tmp_path, random_model):
    """kill -9 of one worker (as the OOM killer does) under `rlvr launch`: the worker said nothing, so the
    launcher says which rank died of which signal, in one line, and exits 128 + 9."""
    cfg = config(tmp_path / "c.yaml", random_model, {"name": "grpo"}, train={"steps": 100000})
    cmd = [sys.executable, "-m", "rlvr", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29535"]
    launcher = subprocess.Popen(
        [*cmd, "train", str(cfg)],
        cwd=ROOT,
        env={**env(), "ACCELERATE_USE_CPU": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    marker = str(cfg)
    try:
        wait_for_rows(launcher, tmp_path / "run", 1)
        workers = sorted(p for p in marked(marker) if p != launcher.pid)
        assert len(workers) == 2
        os.kill(workers[-1], signal.SIGKILL)
        _, err = launcher.communicate(timeout=180)
        assert launcher.returncode == 137, err
        ours = [line for line in err.splitlines() if line.startswith("rlvr launch: ")]
        assert len(ours) == 1 and "was killed by SIGKILL" in ours[0], err
        assert "Traceback" not in err and "ChildFailedError" not in err, err
    finally:
        launcher.kill()
        for pid in marked(marker):
            os.kill(pid, signal.SIGKILL)


def test_huge_lr_does_not_end_as_success(tmp_path, random_model, capsys):
    """train.lr=1e6 leaves finite weights whose policy is uniform over the vocabulary (entropy ln |V|,
    gradient 0): the run stops with exit 1 and one line instead of saving it as a finished run."""
    from rlvr.cli import main

    cfg = config(tmp_path / "c.yaml", random_model, {"name": "grpo"}, train={"lr": 1e6, "grad_clip": 1.0})
    assert main(["train", str(cfg)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("rlvr: error: step 2: the policy's entropy is ") and "uniform over its vocabulary" in last
    assert not (tmp_path / "run" / "final").exists()
