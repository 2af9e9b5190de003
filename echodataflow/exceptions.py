"""The exceptions echodataflow raises.

::

    EchodataflowError
    ├── ConfigError (ValueError)        a deployment or logging file is invalid
    ├── RegistryError (LookupError)     a step or stage is not registered
    ├── SourceError (OSError)           source files cannot be listed or grouped
    ├── StorageError (OSError)          a product cannot be written or committed
    ├── StepError (RuntimeError)        a processing step failed on one raw file
    ├── ClusterError (RuntimeError)     a Dask cluster cannot be started
    └── DeployError (RuntimeError)      a service cannot be deployed on Prefect
        └── ServerUnreachableError      the Prefect API does not answer
"""

from __future__ import annotations

from dataclasses import dataclass


class EchodataflowError(Exception):
    """Base class of every error echodataflow raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration file, located by line and key path."""

    file: str
    line: int | None
    key_path: str
    message: str

    def __str__(self) -> str:
        line = "" if self.line is None else f"{self.line}:"
        key = f" {self.key_path}:" if self.key_path else ""
        return f"{self.file}:{line}{key} {self.message}"


class ConfigError(EchodataflowError, ValueError):
    """A deployment or logging file is invalid; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class RegistryError(EchodataflowError, LookupError):
    """A step or stage module named by configuration is not registered."""


class SourceError(EchodataflowError, OSError):
    """Source files cannot be listed, parsed or grouped."""


class StorageError(EchodataflowError, OSError):
    """A product cannot be written, committed or read back."""


class StepError(EchodataflowError, RuntimeError):
    """A processing step failed on one raw file."""


class DeployError(EchodataflowError, RuntimeError):
    """A service, work pool or queue cannot be created or updated on Prefect."""


class ServerUnreachableError(DeployError):
    """The Prefect API is not configured or does not answer."""


class ClusterError(EchodataflowError, RuntimeError):
    """A Dask cluster cannot be started, e.g. its backend's extra is not installed."""
