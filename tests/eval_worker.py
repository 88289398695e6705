"""One process of a distributed `rlvr.eval.evaluate` (tests/test_eval_pipeline.py launches it
with accelerate): MODEL_DIR OUT_JSON. The model is its own base (model_is_base), so the rows are
written to the base cache; rank 0 writes the rows it returns and the cache path."""

import json
import sys

import torch


def parity_reward(problems, completions):
    return [float((sum(map(ord, c)) + len(p.prompt)) % 3 == 0) for p, c in zip(problems, completions, strict=True)]


def main(model_dir: str, out_json: str) -> None:
    from rlvr.eval import EvalSettings, evaluate
    from rlvr.eval.runner import read_jsonl
    from rlvr.rewards import RewardRunner
    from rlvr.tasks import Problem

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    problems = [Problem(id=f"p{i}", prompt=f"{i} + {i + 3} =", answer=str(2 * i + 3)) for i in range(5)]
    settings = EvalSettings(
        n=3, max_new_tokens=5, temperature=1.0, top_p=1.0, batch_size=6, resamples=20, perplexity=False
    )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr.rollout import HFEngine

    engine = HFEngine(
        AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir), batch_size=6
    )
    r = evaluate(
        problems,
        settings,
        RewardRunner(parity_reward),
        model=engine,
        base=model_dir,
        model_is_base=True,
        rank=rank,
        world=world,
        progress=False,
    )
    torch.distributed.barrier()
    if rank == 0:
        path = r["base_cache"]["path"]
        with open(out_json, "w") as f:
            json.dump(
                {
                    "world": world,
                    "cache": path,
                    "hit": r["base_cache"]["hit"],
                    "rows": read_jsonl(path),
                    "counts": r["model_metrics"]["counts"],
                },
                f,
            )
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
