"""The S3 example deployment, its stage, and products to compare with."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import xarray as xr

from echodataflow import ledger
from echodataflow.deployment.plan import PlannedJob, plan_stage
from echodataflow.deployment.report import RunContext
from echodataflow.models.deployment import Stage
from echodataflow.models.load import load_deployment
from echodataflow.models.resolve import resolve_deployment
from echodataflow.tasklib.runner import run_chain

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ek60-sv-s3.yaml"
# The two smallest files the example's glob matches: moto is slow with zarr v3.
FILES = ("Summer2017-D20170615-T214606.raw", "Summer2017-D20170615-T214712.raw")
RAW_PREFIX = "SH1707/EK60"
PRODUCTS = "s3://edf-products/SH1707/Sv"


def example_stage(**update: Any) -> Stage:
    """The S3 example's stage, resolved, with fields replaced."""
    deployment = resolve_deployment(load_deployment(EXAMPLE), str(EXAMPLE.parent))
    stage: Stage = deployment.services[0].stages[0]
    return stage.model_copy(update=update)


def context() -> RunContext:
    return RunContext(
        run_id="test", service="raw-to-sv-s3", scheduled=datetime.now(UTC)
    )


def make(planned: PlannedJob) -> None:
    """Make one product as a stage flow does: the store, then its record."""
    run_chain(planned.job)
    ledger.write_record(
        planned.job.product_url,
        state="done",
        inputs=planned.inputs,
        steps=planned.steps,
        run_id="test",
        options=planned.job.destination_options,
    )


def read(url: str, options: dict[str, Any] | None = None) -> xr.Dataset:
    return xr.open_zarr(url, consolidated=False, storage_options=options).load()


def assert_same_product(made: xr.Dataset, expected: xr.Dataset) -> None:
    """Equal values everywhere; the source paths differ only in where they were."""
    names = [Path(str(n)).name for n in made["source_filenames"].values]
    assert names == [Path(str(n)).name for n in expected["source_filenames"].values]
    xr.testing.assert_equal(
        made.drop_vars("source_filenames"), expected.drop_vars("source_filenames")
    )


def disk_products(shared_data: Path, out: Path) -> dict[str, xr.Dataset]:
    """Make the products of the two files on local disk; return them by name."""
    source = example_stage().source.model_copy(
        update={
            "path": str(shared_data / "raw/ek60/Summer2017-D20170615-T214[67]*.raw")
        }
    )
    stage = example_stage(
        source=source,
        destination=example_stage().destination.model_copy(update={"path": str(out)}),
    )
    planned, _ = plan_stage(stage, context())
    products = {}
    for p in planned:
        if Path(p.job.sources[0]).name in FILES:
            run_chain(p.job)
            products[Path(p.job.product_url).name] = read(p.job.product_url)
    assert len(products) == len(FILES)
    return products
