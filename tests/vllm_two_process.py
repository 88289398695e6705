"""One rank of the 2-process vLLM test (tests/test_vllm.py): train with `rollout.engine: vllm` under
accelerate launch, then check that this rank's vLLM samples the trained policy: its greedy outputs on
64 prompts equal transformers' greedy outputs of the unwrapped policy. Writes rank<k>.json to argv[2]."""

import json
import sys
from pathlib import Path

import torch

from rlvr.config import load_config
from rlvr.rollout import Sampling
from rlvr.trainer import Trainer
from rlvr.vllm_engine import VLLMEngine
from test_vllm import hf_greedy, problems

trainer = Trainer(load_config(sys.argv[1]))
start = {k: v.clone() for k, v in trainer.accelerator.unwrap_model(trainer.policy).state_dict().items()}
trainer.fit()
policy = trainer.accelerator.unwrap_model(trainer.policy)
probs = problems()
ref = hf_greedy(policy, trainer.tokenizer, probs)
got = trainer.engine.generate(probs, 1, Sampling(temperature=0.0, max_new_tokens=12))
result = {
    "rank": trainer.rank,
    "world": trainer.world,
    "vllm": isinstance(trainer.engine, VLLMEngine),
    "trained": any(not torch.equal(start[k], v) for k, v in policy.state_dict().items()),
    "greedy_equal": torch.equal(got.input_ids, ref.input_ids) and got.completions == ref.completions,
    "weights_sum": float(sum(v.double().sum() for v in policy.state_dict().values())),
}
Path(sys.argv[2], f"rank{trainer.rank}.json").write_text(json.dumps(result))
trainer.engine.close()
