"""Named errors of the flows layer: run configs, runners, the Prefect server. Each names where and why."""

from __future__ import annotations


class FlowError(Exception):
    """Base class: `where` (a config file and section, a flag, a URL) and `reason`."""

    def __init__(self, where: str, reason: str):
        self.where = str(where)
        self.reason = reason
        super().__init__(f"{self.where}: {reason}")


class ConfigError(FlowError):
    """A run config (file, section, key or value) that cannot be used."""


class RunnerError(FlowError):
    """A task runner that cannot be set up (bad settings, a missing extra, an unreachable cluster)."""
