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
from .dapo import DAPO, DAPOConfig
from .grpo import GRPO, GRPOConfig
from .ppo import PPO, PPOConfig
from .reinforce_pp import ReinforcePP, ReinforcePPConfig
from .remax import ReMax
from .rloo import RLOO

__all__ = [
    "Algorithm",
    "AlgorithmConfig",
    "DAPO",
    "DAPOConfig",
    "GRPO",
    "GRPOConfig",
    "PPO",
    "PPOConfig",
    "RLOO",
    "ReMax",
    "ReinforcePP",
    "ReinforcePPConfig",
    "build_algorithm",
    "get_algorithm",
    "register_algorithm",
    "registered_algorithms",
]
