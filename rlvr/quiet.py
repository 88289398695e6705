"""Library log lines that say nothing in an rlvr run, dropped one message at a time (never a whole logger).

accelerate's `save_state` writes safetensors, which cannot hold two names for one tensor, so it drops
the second name of tied weights and warns "[RANK 0] Removed shared tensor {'lm_head.weight'} while
saving" (accelerate/utils/other.py, `clean_state_dict_for_safetensors`) on every checkpoint of a model
with tied embeddings. The model ties them again when the checkpoint loads, so for names that are tied in
the model saved the line is noise; `tied_copies_dropped(models)` drops it for exactly those names while
the save runs. A removal of anything else (tensors that share memory by accident) still warns.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import re
from collections.abc import Iterable, Iterator

import torch

ACCELERATE_LOGGER = "accelerate.utils.other"
_REMOVED = re.compile(r"Removed shared tensor (\{.*?\}) while saving")


def tied_names(model: torch.nn.Module) -> set[str]:
    """Names of `model`'s parameters and buffers that are one tensor under several names (tied weights):
    the same memory, shape and strides; views into one flat buffer are not tied."""
    by_tensor: dict[tuple, list[str]] = {}
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, t in tensors:
        t = getattr(t, "_local_tensor", t)  # a DTensor (FSDP2): its shard
        if t.device.type != "meta" and t.numel():
            by_tensor.setdefault((t.device, t.data_ptr(), t.dtype, tuple(t.shape), t.stride()), []).append(name)
    return {name for names in by_tensor.values() if len(names) > 1 for name in names}


class TiedCopiesFilter(logging.Filter):
    """Drops accelerate's "Removed shared tensor {...}" record when every name in it is a tied name
    (or one with a wrapper's prefix: module.lm_head.weight); lets every other record through."""

    def __init__(self, tied: set[str]):
        super().__init__()
        self.tied = tied

    def filter(self, record: logging.LogRecord) -> bool:
        m = _REMOVED.search(record.getMessage())
        if m is None:
            return True
        try:
            names = ast.literal_eval(m.group(1))
        except (ValueError, SyntaxError):
            return True
        return not all(any(n == t or n.endswith("." + t) for t in self.tied) for n in names)


@contextlib.contextmanager
def tied_copies_dropped(models: Iterable[torch.nn.Module]) -> Iterator[None]:
    """Inside: accelerate's warning about dropping the tied copies of `models`' weights is not shown."""
    tied = set().union(*(tied_names(m) for m in models))
    if not tied:
        yield
        return
    logger, f = logging.getLogger(ACCELERATE_LOGGER), TiedCopiesFilter(tied)
    logger.addFilter(f)
    try:
        yield
    finally:
        logger.removeFilter(f)
