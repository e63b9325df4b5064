"""Exceptions, split by who has to act on them."""


class LabError(Exception):
    """Base class of every error labkit raises on purpose."""


class LabConfigError(LabError):
    """The user has to fix something: a bad parameter, a port in use, a missing
    toolchain, a corrupt cache. The message always names the fix."""


class ServiceError(LabError):
    """A service died, refused a request, or never became ready. The message
    names the service, what was tried, and where its log is."""


class SLAViolation(LabError):
    """A verdict on experiment results: the measured latencies break the SLA."""
