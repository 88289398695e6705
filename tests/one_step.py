"""One optimizer step on a fixed rollout batch; saves the gradients it stepped with.

Run directly (1 process) or under `accelerate launch` (N processes): each
process takes its share of the batch's prompt groups, as the trainer does. The
gradients are captured just before the optimizer step (after DDP's all-reduce),
because Adam's first step is almost sign(g) and would hide a wrong scale: by a
step pre-hook on the policy's torch optimizer, so no trainer method is replaced.

    python tests/one_step.py CONFIG BATCH.pt OUT.pt [dotted.overrides ...]
"""

import sys

import torch

from rlvr.config import load_config
from rlvr.trainer import Trainer


def capture_grads(trainer: Trainer, into: dict) -> None:
    """Copy the policy's gradients into `into` each time its optimizer is about to step."""
    model = trainer.accelerator.unwrap_model(trainer.policy)

    def hook(optimizer, args, kwargs):
        for name, p in model.named_parameters():
            into[name] = None if p.grad is None else p.grad.detach().clone()

    getattr(trainer.optimizer, "optimizer", trainer.optimizer).register_step_pre_hook(hook)


def main() -> None:
    cfg_path, batch_path, out_path, *overrides = sys.argv[1:]
    trainer = Trainer(load_config(cfg_path, overrides))
    batch = torch.load(batch_path, weights_only=False)
    groups = sorted(set(batch.group.tolist()))[trainer.rank :: trainer.world]
    local = batch.select([i for i, g in enumerate(batch.group.tolist()) if g in groups])

    captured: dict = {}
    capture_grads(trainer, captured)
    metrics = trainer.train_on(local)
    if trainer.accelerator.is_main_process:
        torch.save({"grads": captured, "metrics": metrics}, out_path)
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
