"""RLVR algorithms, selectable by name (`algorithm.name`) or import path.

    from rlvr.algorithms import GRPO, register_algorithm

    @register_algorithm("my_grpo")
    class MyGRPO(GRPO):
        def compute_advantages(self, batch): ...
"""

from .base import (
    Algorithm,
    AlgorithmConfig,
    build_algorithm,
    get_algorithm,
    register_algorithm,
    registered_algorithms,
)
from .grpo import GRPO, GRPOConfig

__all__ = [
    "Algorithm",
    "AlgorithmConfig",
    "GRPO",
    "GRPOConfig",
    "build_algorithm",
    "get_algorithm",
    "register_algorithm",
    "registered_algorithms",
]
