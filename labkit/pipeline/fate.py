"""An image's fate: the one vocabulary for where an uploaded image ended up.

Reconcile, audit, experiment results, reports and the SLA all speak it. The flow's
metrics line has its own, smaller vocabulary (:class:`Outcome`: how the flow's work on
one image ended); :meth:`Fate.of_outcome` is the one translation between the two.

Example:
    >>> Fate.of_outcome("ok")
    <Fate.RESIZED: 'resized'>
    >>> Fate.LOST.is_failure, Fate.STALE.is_failure
    (True, True)
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """The ``outcome`` field of a metrics line (``stack/nodered/metrics-line.schema.json``)."""

    OK = "ok"  # the output is written, and its webhook (or the output check) said so
    NO_WEBHOOK = "no_webhook"  # the output is written, but neither the webhook nor the check came in time
    ERROR = "error"  # the flow gave up on the image and dead-lettered it, with a ``code``
    SUPERSEDED = "superseded"  # the event's version was no longer the source's current one: nothing to resize
    MALFORMED = "malformed"  # a Kafka record the flow could not read: it names no image


class Fate(StrEnum):
    """Where an uploaded image ended up."""

    RESIZED = "resized"  # its output is in dit247c, made from its current version, with a metrics line
    UNRECORDED = "unrecorded"  # its output is in dit247c, but no metrics line says so (reconcile re-records it)
    STALE = "stale"  # its output is in dit247c, but made from an older version of it (reconcile republishes it)
    SUPERSEDED = "superseded"  # a newer upload of the same key replaced this version before it was resized
    DEAD_LETTERED = "dead_lettered"  # the pipeline gave up on it and said why (metrics line or DLQ record)
    REFUSED = "refused"  # the upload itself was refused, so the client knows and the pipeline never had it
    PENDING = "pending"  # not judged yet: it may still be on its way
    LOST = "lost"  # none of the above: no output, no dead letter, and old enough to judge

    @classmethod
    def of_outcome(cls, outcome: str) -> Fate:
        """The fate a metrics line's ``outcome`` stands for."""
        if outcome == Outcome.SUPERSEDED:
            return cls.SUPERSEDED
        return cls.RESIZED if outcome in (Outcome.OK, Outcome.NO_WEBHOOK) else cls.DEAD_LETTERED

    @property
    def is_failure(self) -> bool:
        """True for a fate the pipeline must never produce: a silent loss, or an output of an older version."""
        return self in (Fate.LOST, Fate.STALE)

    @property
    def has_output(self) -> bool:
        """True when the resized image is in the output bucket."""
        return self in (Fate.RESIZED, Fate.UNRECORDED, Fate.STALE)


# The fates an experiment's results table says (its ``status`` column), in this order. Unrecorded and
# stale are states of a key in the store, never of one upload: KEY_STATES.
RESULT_FATES = (Fate.RESIZED, Fate.SUPERSEDED, Fate.DEAD_LETTERED, Fate.REFUSED, Fate.PENDING, Fate.LOST)
KEY_STATES = (Fate.UNRECORDED, Fate.STALE)
# Words older run directories used for two of them.
LEGACY_STATUSES = {"ok": Fate.RESIZED.value, "error": Fate.DEAD_LETTERED.value}
# The states an audit counts, one per source object; an unrecorded image is resized (its measurement is
# what is missing). A superseded version is no object any more: the audit counts its metrics lines apart.
AUDITED = (Fate.RESIZED, Fate.STALE, Fate.DEAD_LETTERED, Fate.PENDING, Fate.LOST)
