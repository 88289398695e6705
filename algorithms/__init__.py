"""RLVR algorithms, selectable by name (`algorithm.name`) or import path.

from rlvr.algorithms import GRPO, register_algorithm

@register_algorithm("my_grpo")
class MyGRPO(GRPO):
    def compute_advantages(self, batch): ...
"""

from . import cispo, clip_cov, gmpo, gspo, kl_cov  # noqa: F401  (register the policy losses)
from .base import (
    Algorithm,
    AlgorithmConfig,
    build_algorithm,
    get_algorithm,
    register_algorithm,
    registered_algorithms,
)
from .dapo import DAPO, DAPOConfig
from .distill import Distill, DistillConfig
from .gpg import GPG, GPGConfig
from .grpo import GRPO, GRPOConfig
from .opo import OPO
from .passk import PassK, PassKConfig
from .policy_losses import PolicyLoss, register_policy_loss, registered_policy_losses
from .ppo import PPO, PPOConfig
from .reinforce_pp import ReinforcePP, ReinforcePPConfig
from .remax import ReMax
from .rloo import RLOO

__all__ = [
    "Algorithm",
    "AlgorithmConfig",
    "DAPO",
    "DAPOConfig",
    "Distill",
    "DistillConfig",
    "GRPO",
    "GRPOConfig",
    "GPG",
    "GPGConfig",
    "OPO",
    "PassK",
    "PassKConfig",
    "PolicyLoss",
    "PPO",
    "PPOConfig",
    "RLOO",
    "ReMax",
    "ReinforcePP",
    "ReinforcePPConfig",
    "build_algorithm",
    "get_algorithm",
    "register_algorithm",
    "register_policy_loss",
    "registered_algorithms",
    "registered_policy_losses",
]
