"""Read deployment and logging YAML files into validated models.

Every problem is reported as ``FILE:LINE: key.path: message``; nothing here lets a
traceback through for bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from echodataflow.exceptions import ConfigError, Problem
from echodataflow.models._yaml import (
    KeyPath,
    key_at,
    line_of,
    load_yaml_with_lines,
)
from echodataflow.models.deployment import Deployment
from echodataflow.models.logging import LoggingConfig


def _key_path_text(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".")


def _data_path(loc: tuple[int | str, ...], data: Any) -> KeyPath:
    """Drop the union tags pydantic adds to ``loc``, keeping keys present in data."""
    path: list[str | int] = []
    node = data
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if in_dict or in_list:
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and "[" not in part:
            # A missing or unknown key: name it, though the file has no line for it.
            path.append(part)
            node = None
    return tuple(path)


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key; remove it or check its spelling and indentation"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind in ("literal_error", "enum"):
        return f"got {error['input']!r}; {message.lower()}"
    return message


def problems_from_validation(
    err: ValidationError, data: Any, lines: dict[KeyPath, int], file: str
) -> list[Problem]:
    """Turn a pydantic error into one located problem per distinct key path."""
    problems: dict[str, Problem] = {}
    for error in err.errors():
        path = _data_path(tuple(error["loc"]), data)
        key = _key_path_text(path)
        line = line_of(lines, path)
        if key not in problems:
            problems[key] = Problem(file, line, key, _message(error))
    return list(problems.values())


def _parse(text: str, file: str) -> tuple[Any, dict[KeyPath, int]]:
    try:
        data, lines = load_yaml_with_lines(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = None if mark is None else mark.line + 1
        key = (
            "" if mark is None else _key_path_text(key_at(text, mark.line, mark.column))
        )
        raise ConfigError(
            [Problem(file, line, key, f"not valid YAML: {err.problem or err}")]
        ) from err
    except yaml.YAMLError as err:
        raise ConfigError([Problem(file, None, "", f"not valid YAML: {err}")]) from err
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise ConfigError(
            [Problem(file, 1, "", f"expected a mapping of keys at the top, got {kind}")]
        )
    return data, lines


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            [Problem(str(path), None, "", f"cannot read: {err}")]
        ) from err


def _validate[M: BaseModel](
    model: type[M], text: str, file: str
) -> tuple[M, dict[KeyPath, int]]:
    data, lines = _parse(text, file)
    try:
        return model.model_validate(data), lines
    except ValidationError as err:
        raise ConfigError(problems_from_validation(err, data, lines, file)) from err


def parse_deployment(
    text: str, file: str = "<string>", *, check_stages: bool = True
) -> Deployment:
    """Validate deployment YAML text; see :func:`load_deployment`."""
    deployment, lines = _validate(Deployment, text, file)
    from echodataflow.quality import check_quality
    from echodataflow.registry import check_steps

    problems = check_steps(deployment, lines, file, check_stages=check_stages)
    problems += check_quality(deployment, lines, file)
    if problems:
        raise ConfigError(problems)
    return deployment


def load_deployment(path: str | Path, *, check_stages: bool = True) -> Deployment:
    """Read and validate a deployment YAML file, steps and their parameters included.

    ``check_stages=False`` skips importing the stage flows (and with them Prefect).

    Raises
    ------
    ConfigError
        With one located problem per bad key.
    """
    return parse_deployment(_read(path), str(path), check_stages=check_stages)


def load_logging(path: str | Path) -> LoggingConfig:
    """Read and validate a logging YAML file.

    Raises
    ------
    ConfigError
        With one located problem per bad key.
    """
    config, _ = _validate(LoggingConfig, _read(path), str(path))
    return config


def check_logging_refs(
    deployment: Deployment, logging: LoggingConfig | None, file: str
) -> list[Problem]:
    """Report services whose ``logging.handler`` the logging file lacks."""
    problems = []
    lines: dict[KeyPath, int] | None = None
    for index, service in enumerate(deployment.services):
        if service.logging is None:
            continue
        if logging is None or service.logging.handler not in logging.root:
            defined = [] if logging is None else sorted(logging.root)
            if lines is None:
                lines = _lines_of(file)
            path: KeyPath = ("services", index, "logging", "handler")
            problems.append(
                Problem(
                    file,
                    line_of(lines, path),
                    _key_path_text(path),
                    f"{service.logging.handler!r} is not defined in the logging file "
                    f"(defined: {defined})",
                )
            )
    return problems


def _lines_of(file: str) -> dict[KeyPath, int]:
    """Key lines of an already validated file; empty when it cannot be re-read."""
    try:
        return load_yaml_with_lines(Path(file).read_text(encoding="utf-8"))[1]
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}


def load_files(
    deployment_yaml: str | Path,
    logging_yaml: str | Path | None = None,
    *,
    check_stages: bool = True,
) -> tuple[Deployment, LoggingConfig | None]:
    """Read, validate and resolve a deployment file and an optional logging file.

    Paths are resolved from the deployment file's folder (see
    :func:`~echodataflow.models.resolve.resolve_deployment`).

    Raises
    ------
    ConfigError
        With one located problem per bad key, in either file.
    """
    from echodataflow.models.resolve import resolve_deployment

    problems: list[Problem] = []
    deployment = logging_config = None
    try:
        deployment = load_deployment(deployment_yaml, check_stages=check_stages)
    except ConfigError as err:
        problems.extend(err.problems)
    if logging_yaml is not None:
        try:
            logging_config = load_logging(logging_yaml)
        except ConfigError as err:
            problems.extend(err.problems)
    if deployment is not None and logging_config is not None:
        problems.extend(
            check_logging_refs(deployment, logging_config, str(deployment_yaml))
        )
    if problems or deployment is None:
        raise ConfigError(problems)
    root = str(Path(deployment_yaml).resolve().parent)
    return resolve_deployment(deployment, root), logging_config
