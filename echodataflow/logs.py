"""Logging configuration from the logging YAML, applied at entry points only."""

from __future__ import annotations

import logging
import logging.config
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
