"""Simrad datagram framing: complete files pass, cut or damaged ones are named."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from echodataflow.exceptions import SourceError
from echodataflow.tasklib.simrad import check_complete

EK60 = "raw/ek60/Summer2017-D20170615-T214712.raw"
EK80 = "raw/ek80/2917763601822576513.raw"


@pytest.mark.parametrize(
    "raw", [EK60, EK80, "raw/ek80_edge_cases/4868864620330590206.raw"]
)
def test_a_complete_file_passes(shared_data: Path, raw: str):
    check_complete(str(shared_data / raw), {})


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_a_cut_file_is_refused_with_its_name(
    shared_data: Path, tmp_path: Path, keep: float
):
    data = (shared_data / EK60).read_bytes()
    cut = tmp_path / "Cut-D20170615-T214712.raw"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(SourceError, match=rf"{cut} is truncated: the datagram at"):
        check_complete(str(cut), {})


def test_a_damaged_trailer_is_refused(shared_data: Path, tmp_path: Path):
    data = bytearray((shared_data / EK80).read_bytes())
    (length,) = struct.unpack_from("<i", data, 0)
    struct.pack_into("<i", data, 4 + length, length + 1)
    damaged = tmp_path / "damaged.raw"
    damaged.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="is damaged: the datagram at byte 0 says"):
        check_complete(str(damaged), {})
