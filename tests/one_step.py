"""One optimizer step on a fixed rollout batch; saves the gradients it stepped with.

Run directly (1 process) or under `accelerate launch` (N processes): each
process takes its share of the batch's prompt groups, as the trainer does. The
gradients are captured just before the optimizer step (after DDP's all-reduce),
because Adam's first step is almost sign(g) and would hide a wrong scale.

    python tests/one_step.py CONFIG BATCH.pt OUT.pt [dotted.overrides ...]
"""

import sys

import torch

from rlvr.config import load_config
from rlvr.trainer import Trainer


def main() -> None:
    cfg_path, batch_path, out_path, *overrides = sys.argv[1:]
    trainer = Trainer(load_config(cfg_path, overrides))
    batch = torch.load(batch_path, weights_only=False)
    groups = sorted(set(batch.group.tolist()))[trainer.rank::trainer.world]
    local = batch.select([i for i, g in enumerate(batch.group.tolist()) if g in groups])

    captured = {}
    inner = trainer.optimizer.step

    def step_and_capture(*a, **k):
        model = trainer.accelerator.unwrap_model(trainer.policy)
        for name, p in model.named_parameters():
            captured[name] = None if p.grad is None else p.grad.detach().clone()
        return inner(*a, **k)

    trainer.optimizer.step = step_and_capture
    metrics = trainer.train_on(local)
    if trainer.accelerator.is_main_process:
        torch.save({"grads": captured, "metrics": metrics}, out_path)
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
