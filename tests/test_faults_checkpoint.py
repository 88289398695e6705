"""The run directory survives faults: a kill mid-checkpoint, torn files, a full disk, non-finite
weights, a second run on the same directory (rlvr/checkpoint.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import helpers
from helpers import make_random_model

ROOT = Path(__file__).resolve().parents[1]
UNPRIVILEGED = 9100021  # an unused uid: lock files as a researcher (not root) meets them


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    return make_random_model(tmp_path_factory.mktemp("model") / "m")


def write_config(path: Path, model: Path, **sections) -> Path:
    """5 steps, a checkpoint every 2 (step-2, step-4)."""
    defaults = {"data": {"train_size": 64, "eval_size": 8}, "train": {"steps": 5}, "checkpoint": {"every": 2}}
    return helpers.write_config(path, model, defaults, **sections)


def strict_rows(path: Path) -> list[dict]:
    """Every line of a JSONL file, parsed as strict JSON (NaN/Infinity rejected)."""

    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


# Run the CLI in a child with a fault patched in: a hang while trainer_state.json of step 4 is being
# written (an empty file, as a kill leaves it), or the disk filling up while step 4's optimizer is saved.
HANG = """
import json, os, pathlib, time
_write = pathlib.Path.write_text
def write_text(self, data, *a, **k):
    if self.name == "trainer_state.json" and json.loads(data)["step"] == 4:
        open(self, "w").close()
        _write(pathlib.Path(os.environ["M10_MARK"]), "hung")
        time.sleep(600)
    return _write(self, data, *a, **k)
pathlib.Path.write_text = write_text
"""
ENOSPC = """
import errno, torch
_save = torch.save
def save(obj, f, *a, **k):
    if "step-4" in str(f):
        open(f, "wb").write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")
    return _save(obj, f, *a, **k)
torch.save = save
"""


def cli(cfg: Path, *overrides: str, fault: str = "", wait: bool = True, env: dict | None = None):
    code = fault + "\nimport sys\nfrom rlvr.cli import main\nsys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, "train", str(cfg), *overrides]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "model.safetensors")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, random_model):
    """A 5-step run in this process with checkpoints step-2 and step-4."""
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    tmp = tmp_path_factory.mktemp("finished")
    cfg = load_config(write_config(tmp / "c.yaml", random_model))
    Trainer(cfg).fit()
    return tmp / "run"


def test_kill_mid_checkpoint_resumes_from_the_previous_one_and_a_second_run_is_refused(
    tmp_path, random_model, finished_run
):
    """A run killed (-9) while writing its step-4 checkpoint leaves no step-4 (only a hidden temporary
    directory): a new run resumes from step 2 and ends with bitwise the weights of a run never killed
    (`finished_run`, the same config). While the first run is alive, a second one on its directory fails
    at once naming its pid."""
    cfg, run, mark = write_config(tmp_path / "c.yaml", random_model), tmp_path / "run", tmp_path / "hung"
    first = cli(cfg, fault=HANG, wait=False, env={"M10_MARK": str(mark)})
    try:
        while not mark.exists():
            assert first.poll() is None, first.communicate()[1]
            time.sleep(0.2)
        second = cli(cfg)
        assert second.returncode == 1
        msg = [line for line in second.stderr.splitlines() if line.startswith("rlvr:")]
        assert len(msg) == 1, second.stderr
        assert msg[0].startswith(f"rlvr: error: output_dir {run} is in use by pid {first.pid} on "), msg
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [".tmp-step-4", "step-2"]
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    third = Trainer(load_config(cfg))  # in this process: quicker than a third child
    third.fit()
    assert third.start_step == 2
    assert not (ckpts / ".tmp-step-4").exists()
    a, b = final_weights(finished_run), final_weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in strict_rows(run / "metrics.jsonl")] == [1, 2, 3, 4, 5]


def test_disk_full_while_checkpointing_is_one_line_and_the_older_checkpoint_resumes(tmp_path, random_model):
    """ENOSPC while step 4's optimizer state is written: exit 1, one line "no space left on device
    writing <step-4 path>", no traceback; the partial checkpoint is removed, step 2 is intact and resumes."""
    cfg, run = write_config(tmp_path / "c.yaml", random_model), tmp_path / "run"
    r = cli(cfg, fault=ENOSPC)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("rlvr:")]
    assert lines == [f"rlvr: error: no space left on device writing {run / 'checkpoints' / 'step-4'} "
                     "(the checkpoint was not written; older ones are intact)"], r.stderr  # fmt: skip
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-2"]
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    trainer = Trainer(load_config(cfg))
    trainer.fit()
    assert trainer.start_step == 2
    assert (run / "checkpoints" / "step-4" / "trainer_state.json").is_file()


def resumed(run: Path, tmp_path: Path, model: Path):
    """A copy of `run` and a trainer that has resumed in it (it is not fitted)."""
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy, lambda: _resume(Trainer(load_config(write_config(tmp_path / "c.yaml", model, train={"steps": 7}))))


def _resume(trainer):
    trainer.write_run_files()
    trainer.maybe_resume()
    return trainer


@pytest.mark.parametrize(
    "damage",
    ["empty state", "truncated state", "missing weights", "short optimizer"],
)
def test_a_broken_newest_checkpoint_is_skipped_for_the_older_one(tmp_path, finished_run, random_model, damage, capsys):
    run, start = resumed(finished_run, tmp_path, random_model)
    step4 = run / "checkpoints" / "step-4"
    state = step4 / "trainer_state.json"
    if damage == "empty state":
        state.write_text("")
    elif damage == "truncated state":
        state.write_text(state.read_text()[:40])
    elif damage == "missing weights":
        (step4 / "model.safetensors").unlink()
    else:
        opt = step4 / "optimizer.bin"
        opt.write_bytes(opt.read_bytes()[:1000])
    trainer = start()
    assert trainer.start_step == 2
    err = capsys.readouterr().err
    assert f"rlvr: warning: skipping checkpoint {step4}: " in err
    assert [r["step"] for r in strict_rows(run / "metrics.jsonl")] == [1, 2]


def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path, finished_run, random_model, capsys):
    """A row cut short (disk full, kill) at the end of metrics.jsonl: resume drops it with a warning; the
    run goes on and every line of the file is strict JSON."""
    run, start = resumed(finished_run, tmp_path, random_model)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "loss": 0.')
    trainer = start()
    assert trainer.start_step == 4
    assert "dropping its torn last line 6" in capsys.readouterr().err
    assert [r["step"] for r in strict_rows(run / "metrics.jsonl")] == [1, 2, 3, 4]
    trainer.fit()
    assert [r["step"] for r in strict_rows(run / "metrics.jsonl")] == list(range(1, 8))


def test_non_finite_weights_are_never_saved(tmp_path, random_model):
    """A NaN in a parameter: neither the checkpoint nor final/ is written, and the error names the
    parameter and the step."""
    from rlvr.config import load_config
    from rlvr.errors import RunError
    from rlvr.trainer import Trainer

    trainer = Trainer(load_config(write_config(tmp_path / "c.yaml", random_model)))
    trainer.write_run_files()
    trainer.save_checkpoint(2)
    name, p = next(iter(trainer.accelerator.unwrap_model(trainer.policy).named_parameters()))
    with torch.no_grad():
        p.view(-1)[3] = float("nan")
    with pytest.raises(RunError, match=rf"^step 4: parameter {name} is not finite .*not writing .*step-4"):
        trainer.save_checkpoint(4)
    with pytest.raises(RunError, match=rf"^step 5: parameter {name} is not finite .*not writing .*final"):
        trainer.save_final()
    out = tmp_path / "run"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2"]
    assert not [p for p in out.iterdir() if "final" in p.name]


def test_metrics_rows_are_strict_json_with_null_for_non_finite(tmp_path, random_model):
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    trainer = Trainer(load_config(write_config(tmp_path / "c.yaml", random_model)))
    trainer.write_run_files()
    trainer.log(1, {"loss": float("nan"), "kl": float("inf"), "lr": 1e-7, "n": 3})
    assert strict_rows(tmp_path / "run" / "metrics.jsonl") == [
        {"step": 1, "loss": None, "kl": None, "lr": 1e-7, "n": 3}
    ]


LOCKER = """
import os, sys, time
from rlvr.checkpoint import lock_run_dir
from rlvr.errors import RunError
os.makedirs(sys.argv[1], exist_ok=True)
try:
    lock_run_dir(sys.argv[1])
except RunError as e:
    print(e, flush=True)
    sys.exit(1)
print("locked", flush=True)
if sys.argv[2] == "hold":
    time.sleep(600)
"""


@pytest.fixture
def shared_dir():
    """A world-writable directory outside pytest's private tmp (which another uid cannot enter)."""
    d = Path(tempfile.mkdtemp(prefix="rlvr_lock_test_"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_run_dir_lock_excludes_a_second_process_until_the_first_dies(shared_dir):
    """The lock alone, as an unprivileged uid when run as root: held by a live process it refuses
    another (naming the holder's pid); kill -9 of the holder frees it."""
    as_user = []
    if os.geteuid() == 0 and shutil.which("setpriv"):
        as_user = ["setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups"]
    run = shared_dir / "run"

    def locker(mode: str, wait: bool = True):
        cmd = [*as_user, sys.executable, "-c", LOCKER, str(run), mode]
        if wait:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    holder = locker("hold", wait=False)
    try:
        assert holder.stdout.readline().strip() == "locked"
        other = locker("once")
        assert other.returncode == 1
        assert other.stdout.startswith(f"output_dir {run} is in use by pid {holder.pid} on "), other.stdout
    finally:
        holder.kill()
        holder.wait()
    after = locker("once")
    assert (after.returncode, after.stdout.strip()) == (0, "locked"), after.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_disk_full_while_appending_a_metrics_row_is_one_line_naming_the_file():
    """/dev/full fails every write with ENOSPC, as a full disk does."""
    from rlvr.checkpoint import append_jsonl
    from rlvr.errors import RunError

    with pytest.raises(RunError, match=r"^no space left on device writing /dev/full$"):
        append_jsonl(Path("/dev/full"), {"step": 1, "loss": 0.5})
