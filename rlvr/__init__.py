"""rlvr: reinforcement learning from verifiable rewards, with pass@k against the base model."""

__version__ = "0.1.0"
