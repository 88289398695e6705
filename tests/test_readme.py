"""The README's custom algorithm, taken from the README itself, trains without touching the core.
Its advantages are observed through a hook (a subclass's `prepare`, called right after
`compute_advantages`), not by replacing a method."""

import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def readme_algorithm_source() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    [block] = [b for b in blocks if "register_algorithm" in b and "class " in b]
    return block


SPY = """
from mypkg.sign_grpo import SignGRPO


class Spy(SignGRPO):
    def prepare(self, batch):  # the hook right after compute_advantages
        self.__dict__.setdefault("seen", []).append(batch.advantages.clone())
        super().prepare(batch)
"""


def test_readme_custom_algorithm_is_short_and_trains(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from helpers import make_random_model
    from rlvr.algorithms import base
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    src = readme_algorithm_source()
    assert len([l for l in src.splitlines() if l.strip()]) < 30
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "sign_grpo.py").write_text(src)
    (pkg / "spy.py").write_text(SPY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # the module registers a name on import
    for mod in ("mypkg", "mypkg.sign_grpo", "mypkg.spy"):
        monkeypatch.delitem(sys.modules, mod, raising=False)

    model = make_random_model(tmp_path / "m")
    cfg = load_config(
        None,
        [
            f"output_dir={tmp_path / 'run'}",
            f"model.path={model}",
            "data.train_size=16",
            "data.eval_size=4",
            "algorithm={name: 'mypkg.spy:Spy', margin: 0.05}",
            "rollout.n=4",
            "rollout.max_new_tokens=6",
            "train.steps=2",
            "train.prompts_per_step=4",
            "train.lr=1e-3",
            "eval.before=false",
            "eval.after=false",
            "tracking.progress=false",
        ],
    )

    def varied(problems, completions):
        return [len(set(c)) / 8.0 for c in completions]

    trainer = Trainer(cfg, reward_fn=varied)
    trainer.fit()
    from mypkg.sign_grpo import SignGRPO

    assert isinstance(trainer.algorithm, SignGRPO) and trainer.algorithm.config.margin == 0.05
    seen = trainer.algorithm.seen
    assert len(seen) == 2
    for adv in seen:  # the README's estimator: only -1, 0, +1
        assert set(adv.unique().tolist()) <= {-1.0, 0.0, 1.0} and adv.abs().sum() > 0
    before = dict(AutoModelForCausalLM.from_pretrained(model).named_parameters())
    after = dict(AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final").named_parameters())
    assert all(not torch.equal(p, after[n]) for n, p in before.items())
