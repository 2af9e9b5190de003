"""Logging configuration from the logging YAML, applied at entry points only."""

from __future__ import annotations

import logging
import logging.config
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


def apply_logging(config: dict[str, Any] | None) -> None:
    """Apply one ``dictConfig`` dictionary; ``None`` leaves logging as it is.

    Existing loggers (Prefect's among them) keep working: the entry is applied with
    ``disable_existing_loggers`` as the file says, false by default.
    """
    if not config:
        return
    settings = {"disable_existing_loggers": False, **config}
    logging.config.dictConfig(settings)
    log.debug(
        "logging configured with handlers %s", sorted(settings.get("handlers", {}))
    )


PACKAGE_LOGGER = "echodataflow"
# Bounds what one product's job carries back from a Dask worker.
_MAX_CAPTURED = 500


def forward_to_run(deployed: bool) -> None:
    """Send the package's log records to the Prefect run log, not only to the console.

    Prefect forwards its own loggers to the API; the ``echodataflow`` logger gets
    Prefect's API handler here, once. In a deployed run an unset level becomes INFO
    so that the run log shows progress; the logging file can set another level.
    """
    from prefect.logging.handlers import APILogHandler

    logger = logging.getLogger(PACKAGE_LOGGER)
    if not any(isinstance(h, APILogHandler) for h in logger.handlers):
        logger.addHandler(APILogHandler())
    if deployed and logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


@dataclass(frozen=True)
class LogLine:
    """A log record reduced to plain data, to travel back from a Dask worker."""

    name: str
    levelno: int
    message: str
    pid: int


class _Collector(logging.Handler):
    """Keep the records one thread emits while it makes one product."""

    def __init__(self, lines: list[LogLine]) -> None:
        super().__init__(logging.INFO)
        self.lines = lines
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread or len(self.lines) >= _MAX_CAPTURED:
            return
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            message = f"{message}: {record.exc_info[1]!r}"
        self.lines.append(LogLine(record.name, record.levelno, message, os.getpid()))


@contextmanager
def capture_lines() -> Iterator[list[LogLine]]:
    """Collect this thread's ``echodataflow`` records of INFO and above.

    Used on Dask workers, whose logs would otherwise never reach the flow run: the
    lines go back with the job's outcome (or its error) and :func:`replay` re-emits
    them inside the run.
    """
    logger = logging.getLogger(PACKAGE_LOGGER)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    lines: list[LogLine] = []
    collector = _Collector(lines)
    logger.addHandler(collector)
    try:
        yield lines
    finally:
        logger.removeHandler(collector)


def replay(lines: list[LogLine]) -> None:
    """Re-emit lines captured in another process; lines of this process are skipped.

    A Dask worker in this very process already logged them here, so they would be
    written twice.
    """
    for line in lines:
        if line.pid == os.getpid():
            continue
        logging.getLogger(line.name).log(
            line.levelno, "[dask worker %d] %s", line.pid, line.message
        )


class ExpectedFailureFilter(logging.Filter):
    """Keep tracebacks of per-file step failures out of console output.

    A :class:`~echodataflow.exceptions.StepError` is an expected outcome: the run
    summary, the ledger and the run log already name the raw file and the reason,
    so the Dask worker's "Compute Failed" dump is dropped and other records keep
    their message but lose the traceback. Any other error keeps its traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop or trim the record of an expected per-file failure."""
        if str(record.msg).startswith("Compute Failed"):
            return not any("StepError" in str(arg) for arg in record.args or ())
        exc = record.exc_info[1] if record.exc_info else None
        from echodataflow.exceptions import StepError

        if isinstance(exc, StepError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_worker_failures() -> None:
    """Install :class:`ExpectedFailureFilter` on this Dask worker's logger."""
    logger = logging.getLogger("distributed.worker")
    if not any(isinstance(f, ExpectedFailureFilter) for f in logger.filters):
        logger.addFilter(ExpectedFailureFilter())


def quiet_console_failures() -> None:
    """Install :class:`ExpectedFailureFilter` on every console handler in use."""
    loggers = [logging.getLogger()] + [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name.startswith(("prefect", "distributed", PACKAGE_LOGGER))
    ]
    for logger in loggers:
        for handler in logger.handlers:
            is_console = isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            )
            if is_console and not any(
                isinstance(f, ExpectedFailureFilter) for f in handler.filters
            ):
                handler.addFilter(ExpectedFailureFilter())
