"""The retry policy of the flow's two retrying hops: the one declaration of it.

The flow retries a failed upload (Node-RED -> store) and a failed invoke (Node-RED ->
FaaS) with its ``retry`` subflow. What that subflow does is set here, once:

- :class:`RetryPolicy` is one hop's policy (a pydantic model, so YAML specs, the CLI
  and notebooks validate it the same way);
- :data:`RETRY_PRESETS` names the three policies the lessons compare;
- :class:`RetryHops` gives each hop its policy, and :meth:`RetryHops.tab_env` turns it
  into the flow tab's env properties (``UPLOAD_RETRY_*``, ``INVOKE_RETRY_*``) that the
  two subflow instances read.

Example:
    >>> RetryHops.of("fixed").upload.max_attempts
    4
    >>> RetryHops.of({"upload": "none", "invoke": "exponential"}).name()
    'upload:none/invoke:exponential'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from labkit.errors import LabConfigError

HOPS = ("upload", "invoke")
# The flow's two instances of the retry subflow, by hop.
HOP_NODES = {"upload": "pl_up_retry", "invoke": "pl_inv_retry"}
# The subflow's own env properties, and the tab env property each instance reads for it.
SUBFLOW_ENV = {"POLICY": "policy", "MAX_ATTEMPTS": "max_attempts", "BASE_MS": "base_ms", "CAP_MS": "cap_ms",
               "DEADLINE_MS": "deadline_ms"}


class RetryPolicy(BaseModel):
    """How one hop retries a failed attempt.

    Attributes:
        policy: ``none``, ``fixed`` (``base_ms`` between attempts) or ``exponential``
            (full jitter: a random sleep up to ``min(cap_ms, base_ms * 2**attempt)``).
        max_attempts: Attempts in all, the first included.
        base_ms: Base delay.
        cap_ms: Longest delay.
        deadline_s: No attempt starts later than this after the first.

    Build one with :meth:`of` (or inside :class:`RetryHops`) to get a bad value reported as
    one :class:`LabConfigError` line that names the field.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Literal["none", "fixed", "exponential"] = Field(
        "exponential", description="one of none, fixed (base_ms between attempts), exponential (full jitter)")
    max_attempts: int = Field(10, ge=1, le=20, description="attempts in all, the first included: 1..20")
    base_ms: int = Field(200, ge=0, le=60_000, description="base delay in ms: 0..60000")
    cap_ms: int = Field(5000, ge=0, le=600_000, description="longest delay in ms: 0..600000")
    deadline_s: float = Field(30.0, gt=0, le=600, description="no attempt starts later than this: (0, 600] s")

    @classmethod
    def of(cls, value: RetryPolicy | Mapping | str) -> RetryPolicy:
        """A policy from a preset name, a mapping or a policy.

        Raises:
            LabConfigError: An unknown preset or a value out of range (one line, naming the field).
        """
        try:
            return cls.model_validate(preset(value))
        except (ValidationError, ValueError) as err:
            detail = explain(err) if isinstance(err, ValidationError) else str(err)
            raise LabConfigError(f"bad retry policy: {detail}") from err

    @property
    def deadline_ms(self) -> int:
        return round(self.deadline_s * 1000)

    def tab_env(self, prefix: str = "RETRY_") -> dict[str, Any]:
        """The policy as the flow's env properties: ``{prefix}POLICY``, ``{prefix}MAX_ATTEMPTS``, ..."""
        return {f"{prefix}{name}": getattr(self, field) for name, field in SUBFLOW_ENV.items()}


def explain(err: ValidationError) -> str:
    """A pydantic error as one line: each field, what was wrong, and the allowed range."""
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "value"
        parts.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


RETRY_PRESETS: dict[str, RetryPolicy] = {
    "none": RetryPolicy(policy="none", max_attempts=1),
    "fixed": RetryPolicy(policy="fixed", max_attempts=4, base_ms=500),
    "exponential": RetryPolicy(),  # the pipeline's default
}


def preset(value: Any) -> Any:
    """A preset's policy when ``value`` names one; any other value as it is."""
    if not isinstance(value, str):
        return value
    if value not in RETRY_PRESETS:
        raise ValueError(f"unknown retry preset {value!r}; presets: {', '.join(RETRY_PRESETS)}, "
                         "or a mapping such as {policy: fixed, base_ms: 500}")
    return RETRY_PRESETS[value]


class RetryHops(BaseModel):
    """The retry policy of each hop that retries: ``upload`` and ``invoke``.

    A preset name, or one policy (a mapping or a :class:`RetryPolicy`), sets both hops.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    upload: RetryPolicy = Field(RetryPolicy(), description="the upload hop's policy: a preset name or a mapping")
    invoke: RetryPolicy = Field(RetryPolicy(), description="the invoke hop's policy: a preset name or a mapping")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, (str, RetryPolicy)):
            return {"upload": value, "invoke": value}
        if isinstance(value, Mapping) and not set(HOPS) & set(value):
            return {"upload": dict(value), "invoke": dict(value)}  # one policy for both hops
        return value

    @field_validator("upload", "invoke", mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        return preset(value)

    @classmethod
    def of(cls, value: RetryHops | RetryPolicy | Mapping | str) -> RetryHops:
        """Any way of writing a retry setting, as per-hop policies.

        Raises:
            LabConfigError: An unknown preset or a value out of range.
        """
        if isinstance(value, RetryHops):
            return value
        try:
            return cls.model_validate(value)
        except ValidationError as err:
            raise LabConfigError(f"bad retry setting: {explain(err)}") from err

    def name(self) -> str:
        """A short label: the preset's name, the policy, or ``upload:X/invoke:Y``."""
        def one(policy: RetryPolicy) -> str:
            return next((n for n, p in RETRY_PRESETS.items() if p == policy), policy.policy)

        if self.upload == self.invoke:
            return one(self.upload)
        return f"upload:{one(self.upload)}/invoke:{one(self.invoke)}"

    def tab_env(self) -> dict[str, Any]:
        """Both hops' policies as the flow tab's env: ``UPLOAD_RETRY_*`` and ``INVOKE_RETRY_*``."""
        return {k: v for hop in HOPS for k, v in getattr(self, hop).tab_env(f"{hop.upper()}_RETRY_").items()}


def bind_hops(flows: list[dict]) -> list[dict]:
    """Point each retry-subflow instance in ``flows`` at its own hop's tab env properties.

    The instance of hop ``upload`` reads ``UPLOAD_RETRY_POLICY`` for its ``POLICY``, and so on,
    so one flow file serves any pair of policies.
    """
    for hop, node_id in HOP_NODES.items():
        node = next((n for n in flows if n["id"] == node_id), None)
        if node is None:
            raise LabConfigError(f"the flow has no retry node {node_id!r} for the {hop} hop; "
                                 "restore stack/nodered/flows.json")
        node["env"] = [{"name": name, "type": "env", "value": f"{hop.upper()}_RETRY_{name}"} for name in SUBFLOW_ENV]
    return flows
