"""Make-style planning on real EK60 files: what runs, what is skipped, and why."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import xarray as xr
from makehelp import (
    actions,
    make_in_process,
    mvbs_stage,
    plan_of,
    service_of,
    sv_stage,
)

from echodataflow import ledger, storage

pytestmark = pytest.mark.slow


def _touch(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


def test_a_first_plan_names_every_product_new(raw_copies: Path, tmp_path: Path):
    service = service_of(sv_stage(raw_copies, tmp_path / "out"))
    planned = actions(plan_of(service))
    assert sorted(planned) == [
        "Summer2017-D20170615-T212933_Sv.zarr",
        "Summer2017-D20170615-T214606_Sv.zarr",
        "Summer2017-D20170615-T214712_Sv.zarr",
    ]
    assert set(planned.values()) == {("run", "new")}


def test_touching_one_raw_file_replans_exactly_that_file_and_its_dependents(
    raw_copies: Path, tmp_path: Path
):
    out = tmp_path / "out"
    service = service_of(sv_stage(raw_copies, out), mvbs_stage(out))
    made = make_in_process(service, "first")
    assert len(made) == 4
    assert all(a == "skip" for a, _ in actions(plan_of(service)).values())

    _touch(raw_copies / "Summer2017-D20170615-T214606.raw")
    planned = actions(plan_of(service))
    to_run = {name: why for name, (action, why) in planned.items() if action == "run"}
    assert to_run == {
        "Summer2017-D20170615-T214606_Sv.zarr": (
            "input changed: Summer2017-D20170615-T214606.raw"
        ),
        "all_MVBS.zarr": "upstream Summer2017-D20170615-T214606_Sv.zarr will be remade",
    }

    remade = make_in_process(service, "second")
    assert remade == ["Summer2017-D20170615-T214606_Sv.zarr", "all_MVBS.zarr"]
    assert all(a == "skip" for a, _ in actions(plan_of(service)).values())
    record = ledger.read_record(str(out / "MVBS" / "all_MVBS.zarr"), {})
    assert record is not None
    assert record["run_id"] == "second"


def test_changing_a_step_parameter_replans_every_product_of_that_step(
    raw_copies: Path, tmp_path: Path
):
    out = tmp_path / "out"
    make_in_process(service_of(sv_stage(raw_copies, out), mvbs_stage(out)), "first")
    changed = mvbs_stage(out)
    changed["tasks"][1]["task_params"]["range_bin"] = "10m"
    planned = actions(plan_of(service_of(sv_stage(raw_copies, out), changed)))
    assert planned["all_MVBS.zarr"] == ("run", "parameters changed")
    assert [a for name, (a, _) in planned.items() if name.endswith("_Sv.zarr")] == [
        "skip"
    ] * 3

    sv_changed = sv_stage(raw_copies, out)
    sv_changed["tasks"][1]["task_params"] = {"waveform_mode": "CW"}
    planned = actions(plan_of(service_of(sv_changed, mvbs_stage(out))))
    assert [why for name, (_, why) in planned.items() if name.endswith("_Sv.zarr")] == [
        "parameters changed"
    ] * 3
    assert planned["all_MVBS.zarr"][0] == "run"


def test_plan_writes_nothing(raw_copies: Path, tmp_path: Path):
    out = tmp_path / "out"
    service = service_of(sv_stage(raw_copies, out), mvbs_stage(out))
    plan_of(service)
    assert not out.exists()


def test_a_product_is_done_only_with_a_done_record_and_its_store(
    raw_copies: Path, tmp_path: Path
):
    out = tmp_path / "out"
    service = service_of(sv_stage(raw_copies, out))
    make_in_process(service, "first")
    product = out / "Sv" / "Summer2017-D20170615-T212933_Sv.zarr"
    record_file = out / "Sv" / ledger.LEDGER_FOLDER / f"{product.name}.json"

    record = json.loads(record_file.read_text())
    assert record["state"] == "done"
    assert set(record) >= {
        "inputs",
        "steps",
        "versions",
        "image",
        "run_id",
        "attempts",
        "reason",
    }
    assert record["versions"]["echopype"]
    raw = str(raw_copies / "Summer2017-D20170615-T212933.raw")
    assert set(record["inputs"][raw]) == {"size", "stamp"}

    record_file.unlink()
    assert actions(plan_of(service))[product.name] == (
        "run",
        "incomplete (store without a record)",
    )
    assert ledger.is_done(str(product), {}) is None

    ledger.write_record(
        str(product),
        state="failed",
        inputs={},
        steps=[],
        run_id="x",
        options={},
        reason="StepError: boom",
    )
    ledger.write_record(
        str(product),
        state="failed",
        inputs={},
        steps=[],
        run_id="y",
        options={},
        reason="StepError: boom",
    )
    assert actions(plan_of(service))[product.name] == (
        "run",
        "failed before (2x): StepError: boom",
    )


def test_a_missing_store_with_a_done_record_is_made_again(
    raw_copies: Path, tmp_path: Path
):
    out = tmp_path / "out"
    service = service_of(sv_stage(raw_copies, out))
    make_in_process(service, "first")
    storage.remove(str(out / "Sv" / "Summer2017-D20170615-T214712_Sv.zarr"), {})
    assert actions(plan_of(service))["Summer2017-D20170615-T214712_Sv.zarr"] == (
        "run",
        "missing (record without a store)",
    )


def test_a_version_or_image_change_makes_products_stale(
    raw_copies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    out = tmp_path / "out"
    service = service_of(sv_stage(raw_copies, out))
    make_in_process(service, "first")
    monkeypatch.setenv("ECHODATAFLOW_IMAGE", "ghcr.io/example/edf:2")
    assert {why for _, why in actions(plan_of(service)).values()} == {
        "image changed: None -> ghcr.io/example/edf:2"
    }
    monkeypatch.delenv("ECHODATAFLOW_IMAGE")
    real = ledger.versions()
    monkeypatch.setattr(ledger, "versions", lambda: {**real, "echopype": "99.0"})
    assert {why for _, why in actions(plan_of(service)).values()} == {
        f"version changed: echopype {real['echopype']} -> 99.0"
    }


def test_use_offline_false_always_redoes_and_force_too(
    raw_copies: Path, tmp_path: Path
):
    out = tmp_path / "out"
    make_in_process(service_of(sv_stage(raw_copies, out)), "first")
    always = service_of(sv_stage(raw_copies, out, options={"use_offline": False}))
    assert set(actions(plan_of(always)).values()) == {
        ("run", "forced (use_offline: false)")
    }
    default = service_of(sv_stage(raw_copies, out))
    assert {a for a, _ in actions(plan_of(default)).values()} == {"skip"}


def test_partial_stores_are_never_sources_products_or_done(
    raw_copies: Path, tmp_path: Path
):
    out = tmp_path / "out"
    service = service_of(sv_stage(raw_copies, out), mvbs_stage(out))
    make_in_process(service, "first")
    name = f".Summer2017-D20170615-T299999_Sv.zarr{storage.PARTIAL_MARK}ab"
    partial = out / "Sv" / name
    partial.mkdir()
    (partial / "zarr.json").write_text("{}")
    assert storage.glob(str(out / "Sv" / "*"), {}) == sorted(
        str(p) for p in (out / "Sv").glob("Summer*_Sv.zarr")
    )
    assert all(a == "skip" for a, _ in actions(plan_of(service)).values())
    assert storage.remove_partials(str(out / "Sv"), {}) == 1
    assert not partial.exists()


def test_mvbs_per_file_reads_the_sv_stores_of_an_earlier_stage(
    raw_copies: Path, tmp_path: Path
):
    out = tmp_path / "out"
    per_file = {
        "name": "Sv_flow",
        "tasks": [{"name": "edf_compute_MVBS", "task_params": {"range_bin": "5m"}}],
        "source": {"path": str(out / "Sv" / "*_Sv.zarr")},
        "destination": {"path": str(out / "MVBS")},
    }
    service = service_of(sv_stage(raw_copies, out), per_file)
    planned = actions(plan_of(service))
    assert planned["Summer2017-D20170615-T214712_MVBS.zarr"] == ("run", "new")
    made = make_in_process(service, "first")
    assert "Summer2017-D20170615-T214712_MVBS.zarr" in made
    mvbs = xr.open_zarr(
        out / "MVBS" / "Summer2017-D20170615-T214712_MVBS.zarr", consolidated=False
    )
    assert "Sv" in mvbs
    assert mvbs.attrs["edf_source_files"] == (
        '["Summer2017-D20170615-T214712_Sv.zarr"]'
    )


def test_a_group_mvbs_covers_every_ping_of_its_sv_stores(
    raw_copies: Path, tmp_path: Path
):
    out = tmp_path / "out"
    make_in_process(service_of(sv_stage(raw_copies, out), mvbs_stage(out)), "first")
    pings = [
        xr.open_zarr(p, consolidated=False).sizes["ping_time"]
        for p in sorted((out / "Sv").glob("*_Sv.zarr"))
    ]
    assert pings == [52, 43, 10]
    mvbs = xr.open_zarr(out / "MVBS" / "all_MVBS.zarr", consolidated=False)
    sources = json.loads(mvbs.attrs["edf_source_files"])
    assert len(sources) == 3
    assert mvbs.attrs["edf_run_id"] == "first"
    assert json.loads(mvbs.attrs["edf_versions"])["echopype"]
