"""Process faults: a service's processes, through the lab's backend.

``stop`` is a clean shutdown, ``kill`` is ``kill -9`` (a crash), and ``pause`` is ``SIGSTOP``:
the process is still there, holds its ports and connections, and answers nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from labkit.errors import ServiceError
from labkit.experiments.faults.kinds import FaultKind, register, service_state
from labkit.experiments.faults.model import Fault
from labkit.stack.services import SERVICE_NAMES
from labkit.stack.services.kafka import REPLICAS

if TYPE_CHECKING:
    from labkit.stack.lab import Lab

HEALTH_POLL_S = 0.5


class ProcessKind(FaultKind):
    """A fault on one service's processes. A service has one process fault at a time."""

    family = "process"
    target_noun, targets_noun = "a service", "services"

    def targets(self) -> tuple[str, ...]:
        return SERVICE_NAMES + REPLICAS  # the replicated Kafka's other brokers and its controllers

    def slot(self, fault: Fault) -> tuple[str, str]:
        return self.family, fault.target


@register
class Stop(ProcessKind):
    """A clean shutdown; clearing it starts the service again and waits until it is healthy."""

    name = "stop"
    repair_note = "started again by up"

    def inject(self, lab: Lab, fault: Fault) -> None:
        lab.backend.stop(fault.target)

    def clear(self, lab: Lab, fault: Fault, *, revive: bool = True) -> None:
        if revive:
            lab.backend.start(fault.target)
            wait_healthy(lab, fault.target)

    def describe(self, fault: Fault) -> str:
        return f"stop {fault.target}, started again after {fault.duration_s:g} s"


@register
class Kill(Stop):
    """``kill -9``, like a crash; cleared like :class:`Stop`."""

    name = "kill"

    def inject(self, lab: Lab, fault: Fault) -> None:
        lab.backend.kill(fault.target)

    def describe(self, fault: Fault) -> str:
        return f"kill -9 {fault.target}, started again after {fault.duration_s:g} s"


@register
class Pause(ProcessKind):
    """``SIGSTOP``: the service keeps its ports and answers nothing; clearing it resumes it."""

    name = "pause"
    repair_note = "resumed"

    def inject(self, lab: Lab, fault: Fault) -> None:
        lab.backend.pause(fault.target)

    def clear(self, lab: Lab, fault: Fault, *, revive: bool = True) -> None:
        if service_state(lab, fault.target) == "down":
            return  # stopped meanwhile: nothing is paused
        lab.backend.resume(fault.target)
        wait_healthy(lab, fault.target)

    def describe(self, fault: Fault) -> str:
        return f"pause {fault.target} (SIGSTOP) for {fault.duration_s:g} s"


def wait_healthy(lab: Lab, service: str) -> None:
    """Wait until ``service`` is healthy, at most the lab's ``ready_timeout_s``.

    Raises:
        ServiceError: it was not healthy in time.
    """
    timeout_s = lab.ctx.config.ready_timeout_s

    def healthy() -> bool:
        return next(s.healthy for s in lab.backend.status() if s.name == service)

    try:
        Retrying(stop=stop_after_delay(timeout_s), wait=wait_fixed(HEALTH_POLL_S),
                 retry=retry_if_result(lambda ok: not ok))(healthy)
    except RetryError as err:
        raise ServiceError(f"{service} was not healthy {timeout_s:.0f} s after its fault was cleared. "
                           f"Hint: `labkit logs {service}`; `labkit restart {service}`.") from err
