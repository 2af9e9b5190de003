"""Echodataflow: declarative, scheduled processing of ocean echosounder data."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("echodataflow")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
