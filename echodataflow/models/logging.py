"""pydantic model of the logging YAML: named ``logging.config.dictConfig`` entries."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator


class LoggingEntry(BaseModel):
    """One ``dictConfig`` dictionary; any handler class works."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = Field(description="dictConfig schema version; always 1.")
    formatters: dict[str, dict[str, Any]] = Field(default_factory=dict)
    filters: dict[str, dict[str, Any]] = Field(default_factory=dict)
    handlers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    loggers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    root: dict[str, Any] | None = None
    incremental: bool = False
    disable_existing_loggers: bool = False

    @model_validator(mode="after")
    def _handlers_exist(self) -> LoggingEntry:
        for name, handler in self.handlers.items():
            if "class" not in handler:
                raise ValueError(
                    f"handler {name!r} needs a class, e.g. logging.StreamHandler"
                )
        known = set(self.handlers)
        used = [h for cfg in self.loggers.values() for h in cfg.get("handlers", [])]
        used += list((self.root or {}).get("handlers", []))
        unknown = sorted(set(used) - known)
        if unknown:
            raise ValueError(
                f"loggers use undefined handlers {unknown}; defined: {sorted(known)}"
            )
        return self

    def as_dict(self) -> dict[str, Any]:
        """Return the entry as a plain dictConfig dictionary."""
        return self.model_dump(exclude_none=True)


class LoggingConfig(RootModel[dict[str, LoggingEntry]]):
    """The logging YAML: handler name to dictConfig entry, ``default`` first."""

    def for_service(self, handler: str | None) -> dict[str, Any] | None:
        """Return the dictConfig for a service's ``logging.handler``, else ``default``.

        Raises
        ------
        KeyError
            When the service names a handler the file does not define.
        """
        if handler is not None:
            if handler not in self.root:
                raise KeyError(
                    f"logging handler {handler!r} is not in the logging file; "
                    f"it defines {sorted(self.root)}"
                )
            return self.root[handler].as_dict()
        default = self.root.get("default")
        return None if default is None else default.as_dict()
