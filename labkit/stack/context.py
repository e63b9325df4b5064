"""What every part of one lab instance shares: its config and its secrets."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from labkit.stack.config import LabConfig, load_config
from labkit.stack.secrets import LabSecrets, load_or_create


@dataclass
class LabContext:
    """The config of one lab, and its secrets, loaded (and generated) on first use."""

    config: LabConfig

    @classmethod
    def from_env(cls, **overrides: object) -> "LabContext":
        return cls(load_config(**overrides))

    @cached_property
    def secrets(self) -> LabSecrets:
        return load_or_create(self.config.data_dir)
