"""Leaf module for errors shared by the config, data, reward and template modules.

It imports nothing from rlvr, so any module may raise `ConfigError` without a late import.
"""


class ConfigError(ValueError):
    """A bad config: the message names the key or file and what was expected."""
