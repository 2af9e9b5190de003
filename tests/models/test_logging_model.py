"""The logging YAML model: named dictConfig entries, checked before any run."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from echodataflow.models.logging import LoggingConfig

ENTRY = {
    "version": 1,
    "formatters": {"plain": {"format": "%(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"echodataflow": {"level": "DEBUG", "handlers": ["console"]}},
    "root": {"level": "INFO", "handlers": ["console"]},
}


def test_a_service_gets_its_named_entry_as_a_plain_dictconfig():
    config = LoggingConfig.model_validate({"default": ENTRY, "debug": ENTRY})
    entry = config.for_service("debug")
    assert entry is not None
    assert entry["handlers"]["console"]["class"] == "logging.StreamHandler"
    assert entry["version"] == 1


def test_a_service_without_a_handler_gets_the_default_entry():
    config = LoggingConfig.model_validate({"default": ENTRY})
    assert config.for_service(None) == config.root["default"].as_dict()


def test_without_a_default_entry_logging_is_left_alone():
    assert LoggingConfig.model_validate({"other": ENTRY}).for_service(None) is None


def test_an_unknown_handler_name_is_a_key_error_listing_the_defined_ones():
    config = LoggingConfig.model_validate({"default": ENTRY})
    with pytest.raises(KeyError, match=r"'nope' is not in the logging file.*default"):
        config.for_service("nope")


def test_version_is_required():
    entry = {k: v for k, v in ENTRY.items() if k != "version"}
    with pytest.raises(ValidationError, match="version"):
        LoggingConfig.model_validate({"default": entry})


def test_a_logger_using_an_undefined_handler_is_rejected():
    entry = {**ENTRY, "root": {"handlers": ["console", "file"]}}
    with pytest.raises(ValidationError, match=r"undefined handlers \['file'\]"):
        LoggingConfig.model_validate({"default": entry})


def test_a_handler_without_a_class_is_rejected():
    entry = {**ENTRY, "handlers": {"console": {"level": "INFO"}}}
    with pytest.raises(ValidationError, match="handler 'console' needs a class"):
        LoggingConfig.model_validate({"default": entry})


def test_unknown_keys_of_an_entry_are_rejected():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        LoggingConfig.model_validate({"default": {**ENTRY, "handler": {}}})
