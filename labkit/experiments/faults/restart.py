"""The stack restart: ``labkit down``, then ``up``, data kept, as one fault on the target ``stack``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.experiments.faults.kinds import FaultKind, register
from labkit.experiments.faults.model import STACK, Fault
from labkit.pipeline import deploy as pipeline

if TYPE_CHECKING:
    from labkit.stack.lab import Lab


@register
class RestartStack(FaultKind):
    """The whole stack goes down and comes up again, data kept; the pipeline must be stood up.

    The fault is over when :meth:`inject` returns: every service is up again and the flow's
    Kafka consumer has rejoined its group (it resumes from its committed offset). So a schedule
    clears it at once, and its window runs from ``down`` until then; its ``duration_s`` is only
    the time planned for it. Load clients keep retrying uploads meanwhile
    (:func:`labkit.pipeline.upload.upload_one`). ``up`` also repairs, so the restart ends every
    other fault in force.
    """

    name = "restart"
    family = "restart"
    target_noun, targets_noun = "the whole stack", "targets"
    lasts = False
    # Stopping seven services, starting them in waves and waiting for the consumer, on a busy machine.
    slack_s = 300.0

    def targets(self) -> tuple[str, ...]:
        return (STACK,)

    def inject(self, lab: Lab, fault: Fault) -> None:
        lab.down()
        lab.up()
        pipeline.wait_for_consumer(lab)  # images uploaded from now on are not missed

    def clear(self, lab: Lab, fault: Fault, *, revive: bool = True) -> None:
        """Nothing to undo: the stack is up again when :meth:`inject` returns."""

    def describe(self, fault: Fault) -> str:
        return "labkit down, then up (data kept)"
