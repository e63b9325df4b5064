"""Pinned service versions, read from the one file that pins them."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

STACK_DIR = Path(__file__).resolve().parents[2] / "stack"
VERSIONS_FILE = STACK_DIR / "versions.toml"


@cache
def pins() -> dict[str, dict[str, str]]:
    """Return every entry of ``stack/versions.toml``, keyed by service."""
    with VERSIONS_FILE.open("rb") as f:
        return tomllib.load(f)


def pin(name: str) -> dict[str, str]:
    """Return the pinned entry of one service."""
    return pins()[name]
