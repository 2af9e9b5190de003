"""Integrity check of Simrad raw files (EK60, ES70, EK80, ES80, EA640).

echopype reads a file cut off mid-datagram without complaint and returns the pings
before the cut, so a truncated upload would become a product that looks complete.
A Simrad file is a run of datagrams, each framed by its length before and after;
walking those frames finds a truncated or damaged file before it is opened.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, BinaryIO

from echodataflow import storage
from echodataflow.exceptions import SourceError

log = logging.getLogger(__name__)

SIMRAD_MODELS = frozenset({"EK60", "ES70", "EK80", "ES80", "EA640"})
_LENGTH = struct.Struct("<i")


def frame_problem(handle: BinaryIO, size: int) -> str | None:
    """Return what is wrong with the datagram framing of a file, or None.

    Parameters
    ----------
    handle
        The file, opened for binary reading and seekable.
    size
        The file's size in bytes.
    """
    position = 0
    while position < size:
        if size - position < _LENGTH.size:
            return f"ends {size - position} byte(s) into a datagram at byte {position}"
        handle.seek(position)
        (length,) = _LENGTH.unpack(handle.read(_LENGTH.size))
        end = position + 2 * _LENGTH.size + length
        if length <= 0:
            return f"has a datagram of length {length} at byte {position}"
        if end > size:
            return (
                f"is truncated: the datagram at byte {position} needs {end} bytes, "
                f"the file has {size}"
            )
        handle.seek(end - _LENGTH.size)
        (trailer,) = _LENGTH.unpack(handle.read(_LENGTH.size))
        if trailer != length:
            return (
                f"is damaged: the datagram at byte {position} says {length} bytes "
                f"before and {trailer} after"
            )
        position = end
    return None


def check_complete(url: str, options: dict[str, Any]) -> None:
    """Refuse a Simrad raw file that is truncated or damaged.

    Raises
    ------
    SourceError
        Naming the file and what is wrong with it.
    """
    fs, path = storage.filesystem(url, options)
    size = int(fs.size(path))
    with fs.open(path, "rb") as handle:
        problem = frame_problem(handle, size)
    if problem is not None:
        raise SourceError(f"raw file {url} {problem}")
    log.debug("%s: datagram framing complete (%d bytes)", url, size)
