"""The two ways the readiness gate fails: for good (GateError, shown by CloudFormation) or
one Kubernetes API call (KubeApiError, possibly worth another poll)."""

from __future__ import annotations


class GateError(Exception):
    """The RayService will not become Ready (rejected, timed out, or unreachable for good)."""


class KubeApiError(Exception):
    """A Kubernetes API call failed. `transient` errors are worth another poll."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient
