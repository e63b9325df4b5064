"""Readiness checks as small objects that combine: ``HttpReady``, ``PortReady``, ``LogReady``."""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Protocol

import httpx
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed


class Readiness(Protocol):
    """Something that can tell, in one quick probe, whether a service is ready."""

    def probe(self) -> bool: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class PortReady:
    """Ready when a TCP connection to ``host:port`` is accepted."""

    port: int
    host: str = "127.0.0.1"

    def probe(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def describe(self) -> str:
        return f"TCP connect to {self.host}:{self.port}"


@dataclass(frozen=True)
class HttpReady:
    """Ready when ``GET url`` answers with one of ``statuses`` (an ``https`` URL's certificate
    checked against ``verify``: the lab's CA for its own listeners)."""

    url: str
    statuses: tuple[int, ...] = (200,)
    verify: ssl.SSLContext | bool = True

    def probe(self) -> bool:
        try:
            return httpx.get(self.url, timeout=1.0, verify=self.verify).status_code in self.statuses
        except httpx.HTTPError:
            return False

    def describe(self) -> str:
        return f"GET {self.url} answering {'/'.join(map(str, self.statuses))}"


@dataclass(frozen=True)
class LogReady:
    """Ready when a line of the log file matches ``pattern``."""

    log: Path
    pattern: str

    def probe(self) -> bool:
        try:
            return re.search(self.pattern, self.log.read_text(errors="replace")) is not None
        except FileNotFoundError:
            return False

    def describe(self) -> str:
        return f"log line matching {self.pattern!r} in {self.log}"


@dataclass(frozen=True)
class AllReady:
    """Ready when every one of ``checks`` is."""

    checks: tuple[Readiness, ...]

    def probe(self) -> bool:
        return all(c.probe() for c in self.checks)

    def describe(self) -> str:
        return " and ".join(c.describe() for c in self.checks)


Outcome = Literal["ready", "died", "timeout"]


def poll_until(probe: Callable[[], bool], timeout_s: float, interval_s: float,
               alive: Callable[[], bool] = lambda: True) -> Outcome:
    """Poll ``probe`` every ``interval_s`` until it holds; return why polling ended.

    The probe runs at least once, however short the timeout.

    Returns:
        ``"ready"``, ``"died"`` (``alive`` turned false) or ``"timeout"``.
    """
    def attempt() -> Outcome | None:
        if probe():
            return "ready"
        return None if alive() else "died"

    retrying = Retrying(stop=stop_after_delay(timeout_s), wait=wait_fixed(interval_s),
                        retry=retry_if_result(lambda outcome: outcome is None),
                        retry_error_callback=lambda _: "timeout")
    return retrying(attempt)
