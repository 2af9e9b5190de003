"""Find a stage's source files and group them: the design document's discovery path.

``extract_source`` → ``glob_all_files`` list the files (Jinja-rendered paths, globs,
lists, URLs; optional time windows); ``parse_raw_paths`` maps them to groups
(transects); ``club_raw_files`` orders groups and files in time.
"""

from __future__ import annotations

import io
import logging
import posixpath
import re
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2

from echodataflow import storage
from echodataflow.exceptions import SourceError
from echodataflow.models.deployment import (
    Group,
    Source,
    StageOptions,
    WindowOptions,
)

log = logging.getLogger(__name__)

ALL_FILES_GROUP = "all"
_TEMPLATES = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)


@dataclass(frozen=True)
class RawFile:
    """One source file with what its name says about it."""

    path: str
    datetime: datetime | None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The file's base name."""
        return posixpath.basename(self.path.rstrip("/"))


def render(template: str, parameters: dict[str, Any]) -> str:
    """Render Jinja variables in a path; an undefined variable is an error.

    Raises
    ------
    SourceError
        When the template uses a variable that ``parameters`` lacks.
    """
    try:
        return _TEMPLATES.from_string(template).render(**parameters)
    except jinja2.TemplateError as err:
        raise SourceError(
            f"cannot render source path {template!r}: {err}; "
            f"source.parameters defines {sorted(parameters)}"
        ) from err


def _patterns(source: Source) -> dict[str | None, list[str]]:
    if isinstance(source.path, str):
        return {None: [source.path]}
    if isinstance(source.path, list):
        return {None: list(source.path)}
    return {group: list(paths) for group, paths in source.path.items()}


def glob_all_files(
    source: Source, options: dict[str, Any]
) -> dict[str | None, list[str]]:
    """Glob every (rendered) source path; keyed by the group a mapping path names.

    Raises
    ------
    SourceError
        When a path cannot be rendered or listed.
    """
    found: dict[str | None, list[str]] = {}
    for group, patterns in _patterns(source).items():
        urls: list[str] = []
        for pattern in patterns:
            rendered = render(pattern, source.parameters)
            matches = storage.glob(rendered, options)
            if not matches:
                log.warning("source path %s matches no file", rendered)
            urls.extend(matches)
        found[group] = sorted(dict.fromkeys(urls))
    return found


def parse_file_time(
    path: str, raw_regex: str
) -> tuple[datetime | None, dict[str, str]]:
    """Parse the timestamp (UTC) and other named groups of ``raw_regex`` from a name."""
    match = re.search(raw_regex, posixpath.basename(path.rstrip("/")))
    if match is None:
        return None, {}
    groups = {k: v for k, v in match.groupdict().items() if v is not None}
    date, time = groups.pop("date", None), groups.pop("time", None)
    if date is None or time is None:
        return None, groups
    try:
        stamp = datetime.strptime(date + time.ljust(6, "0"), "%Y%m%d%H%M%S")
    except ValueError:
        return None, groups
    return stamp.replace(tzinfo=UTC), groups


def select_windows(
    files: list[RawFile], window: WindowOptions, scheduled: datetime
) -> dict[str, list[RawFile]]:
    """Group files into the last ``number_of_windows`` windows before ``scheduled``.

    The newest window ends at the scheduled time minus the time-travel offset (seconds
    dropped); windows are half-open ``[start, end)`` and walk back in time. A window
    holds the files that start inside it **and** the last file that starts before it,
    because that file's pings may run into the window. Files without a timestamp are
    left out. Windows without files are omitted.
    """
    length = timedelta(hours=window.window_hours, minutes=window.window_mins)
    travel = timedelta(hours=window.time_travel_hours, minutes=window.time_travel_mins)
    end = (scheduled - travel).replace(second=0, microsecond=0)
    timed = sorted((f for f in files if f.datetime is not None), key=_time_key)
    windows: dict[str, list[RawFile]] = {}
    for _ in range(window.number_of_windows):
        start = end - length
        inside = [f for f in timed if start <= _time_key(f) < end]
        before = [f for f in timed if _time_key(f) < start]
        chosen = ([before[-1]] if before else []) + inside
        if inside:
            name = f"win_{start:D%Y%m%d-T%H%M%S}_{end:D%Y%m%d-T%H%M%S}"
            windows[name] = chosen
        end = start
    return dict(reversed(windows.items()))


def _time_key(file: RawFile) -> datetime:
    return file.datetime or datetime.min.replace(tzinfo=UTC)


def extract_source(
    source: Source,
    options: dict[str, Any],
    scheduled: datetime | None = None,
    upcoming: list[str] | None = None,
) -> list[str]:
    """List a stage's source files, restricted to the time windows when configured.

    ``upcoming`` adds files that do not exist yet but will (an earlier stage's
    products, when a whole service is planned).

    Raises
    ------
    SourceError
        When a path cannot be rendered or listed.
    """
    found = glob_all_files(source, options)
    paths = sorted({path for paths in found.values() for path in paths})
    paths = sorted(set(paths) | set(upcoming or []))
    if source.window_options is None:
        return paths
    files = [RawFile(p, *parse_file_time(p, source.raw_regex)) for p in paths]
    windows = select_windows(
        files, source.window_options, scheduled or datetime.now(UTC)
    )
    return sorted({f.path for chosen in windows.values() for f in chosen})


def _group_file_members(group: Group, options: dict[str, Any]) -> dict[str, str]:
    """Read a group file (.txt, or .zip of .txt) into raw file name → group label."""
    assert group.file is not None
    url = group.file
    fs, path = storage.filesystem(url, options)
    try:
        with fs.open(path, "rb") as handle:
            content = handle.read()
    except OSError as err:
        raise SourceError(f"cannot read group file {url!r}: {err}") from err
    if url.endswith(".zip"):
        members: dict[str, str] = {}
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    raise SourceError(
                        f"group file {url!r} holds a folder {info.filename!r}"
                    )
                text = archive.read(info).decode("utf-8")
                label = _group_label(info.filename, group.grouping_regex)
                for name in _listed_names(text):
                    members.setdefault(name, label)
        return members
    if not url.endswith(".txt"):
        raise SourceError(f"group file {url!r} must be .txt or .zip")
    label = _group_label(url, group.grouping_regex)
    return {name: label for name in _listed_names(content.decode("utf-8"))}


def _listed_names(text: str) -> list[str]:
    return [
        posixpath.basename(line.strip()) for line in text.splitlines() if line.strip()
    ]


def _group_label(name: str, regex: str | None) -> str:
    base = posixpath.basename(name)
    if regex is not None:
        match = re.match(regex, base)
        if match is not None and match.group("transect_num") is not None:
            return match.group("transect_num")
    return base.split(".")[0]


def parse_raw_paths(
    paths: list[str],
    source: Source,
    group: Group | None,
    options: dict[str, Any],
    stage_options: StageOptions | None = None,
    scheduled: datetime | None = None,
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Map files to groups; return the groups and the files left out, with reasons.

    Groups come from, in order: a mapping ``source.path``; time windows; a group
    file; ``grouping_regex`` on file names; else each file alone, or all files in
    one group when ``options.group`` is true.
    """
    stage_options = stage_options or StageOptions()
    groups: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    if isinstance(source.path, dict):
        for name, members in glob_all_files(source, options).items():
            groups[str(name)] = [p for p in members if p in set(paths)]
    elif source.window_options is not None:
        files = [RawFile(p, *parse_file_time(p, source.raw_regex)) for p in paths]
        windows = select_windows(
            files, source.window_options, scheduled or datetime.now(UTC)
        )
        groups = {name: [f.path for f in chosen] for name, chosen in windows.items()}
    elif group is not None and group.file is not None:
        listed = _group_file_members(group, options)
        for path in paths:
            base = posixpath.basename(path.rstrip("/"))
            label = listed.get(base) or listed.get(base.split(".")[0])
            if label is None:
                skipped[path] = f"not listed in group file {group.file}"
            else:
                groups.setdefault(label, []).append(path)
    elif group is not None and group.grouping_regex is not None:
        for path in paths:
            match = re.search(group.grouping_regex, posixpath.basename(path))
            if match is None:
                skipped[path] = (
                    f"name does not match grouping_regex {group.grouping_regex!r}"
                )
            else:
                groups.setdefault(match.group("transect_num"), []).append(path)
    elif stage_options.group:
        groups = {ALL_FILES_GROUP: list(paths)} if paths else {}
    else:
        for path in paths:
            groups[stem(path)] = [path]
    return groups, skipped


def stem(path: str) -> str:
    """Return a file's name without its last extension (folders keep their dots)."""
    name = posixpath.basename(path.rstrip("/"))
    root, ext = posixpath.splitext(name)
    return root if ext else name


def club_raw_files(
    groups: dict[str, list[str]], source: Source
) -> dict[str, dict[str, RawFile]]:
    """Order files by time inside each group and groups by their first file's time."""
    clubbed: dict[str, dict[str, RawFile]] = {}
    for name, paths in groups.items():
        files = [RawFile(p, *parse_file_time(p, source.raw_regex)) for p in paths]
        files.sort(key=lambda f: (_time_key(f), f.path))
        if files:
            clubbed[name] = {f.path: f for f in files}
    return dict(
        sorted(
            clubbed.items(),
            key=lambda item: (_time_key(next(iter(item[1].values()))), item[0]),
        )
    )
