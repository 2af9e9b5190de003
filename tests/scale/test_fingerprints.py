"""Fingerprints of many files from one listing per folder equal file-by-file ones."""

from __future__ import annotations

import os
from pathlib import Path

from echodataflow import storage


def test_fingerprints_of_a_folder_equal_those_taken_one_by_one(tmp_path: Path):
    for index in range(5):
        (tmp_path / f"f{index}.raw").write_bytes(b"x" * index)
    os.utime(tmp_path / "f3.raw", (1_000_000, 1_000_000))
    (tmp_path / "store.zarr").mkdir()
    (tmp_path / "store.zarr" / "zarr.json").write_text("{}")
    urls = sorted(str(p) for p in tmp_path.iterdir())
    assert storage.fingerprints(urls, {}) == {
        url: storage.fingerprint(url, {}) for url in urls
    }


def test_a_file_alone_in_its_folder_and_files_of_several_folders_are_fingerprinted(
    tmp_path: Path,
):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "one.raw").write_bytes(b"1")
    (tmp_path / "b" / "two.raw").write_bytes(b"22")
    (tmp_path / "b" / "three.raw").write_bytes(b"333")
    urls = [str(p) for p in sorted(tmp_path.glob("*/*.raw"))]
    found = storage.fingerprints(urls, {})
    assert [found[url]["size"] for url in urls] == [1, 3, 2]
