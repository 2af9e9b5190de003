"""Sources, products, ledger and credentials on a real S3 server, in this process.

The planning, step and commit code run here exactly as on a Dask worker; the
end-to-end runs of ``echodataflow run`` are in ``test_s3_runs.py``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xarray as xr
from faultproxy import FaultProxy
from products import (
    EXAMPLE,
    FILES,
    PRODUCTS,
    RAW_PREFIX,
    assert_same_product,
    context,
    example_stage,
    make,
    read,
)

from echodataflow import ledger, storage
from echodataflow.deployment.plan import plan_stage
from echodataflow.exceptions import StorageError
from echodataflow.models.deployment import StorageOptions
from echodataflow.models.load import load_deployment
from echodataflow.models.resolve import resolve_deployment
from echodataflow.tasklib.runner import ChainJob, StepCall, run_chain

pytestmark = [pytest.mark.s3, pytest.mark.slow]


@pytest.fixture
def raw_on_s3(s3: Any, shared_data: Path) -> list[str]:
    s3.make_bucket("edf-products")
    return list(
        s3.upload("edf-raw", RAW_PREFIX, [shared_data / "raw/ek60" / f for f in FILES])
    )


@pytest.fixture
def proxy(s3: Any) -> Iterator[FaultProxy]:
    faults = FaultProxy(s3.endpoint, every=3, budget=24).start()
    yield faults
    faults.stop()


def test_sources_on_s3_are_found_through_a_jinja_prefix_and_fingerprinted_by_etag(
    raw_on_s3: list[str],
) -> None:
    planned, left_out = plan_stage(example_stage(), context())

    assert left_out == {}
    assert sorted(p.job.sources[0] for p in planned) == sorted(raw_on_s3)
    for p in planned:
        (fingerprint,) = p.inputs.values()
        assert fingerprint["stamp"].startswith("ETag=")
        assert p.decision.why == "new"
        assert p.job.product_url.startswith(f"{PRODUCTS}/Summer2017-D20170615-T214")


def test_transient_s3_faults_are_retried_and_every_product_equals_the_disk_run(
    raw_on_s3: list[str], proxy: FaultProxy, reference: dict[str, xr.Dataset]
) -> None:
    through_proxy = StorageOptions(endpoint_url=proxy.url)
    base = example_stage()
    stage = example_stage(
        source=base.source.model_copy(update={"storage_options": through_proxy}),
        destination=base.destination.model_copy(
            update={"storage_options": through_proxy}
        ),
    )

    planned, _ = plan_stage(stage, context())
    for p in planned:
        make(p)

    # Every kind of fault happened, and none cost a product.
    assert set(proxy.injected) == {"503", "drop", "lost"}, proxy.injected
    for p in planned:
        name = Path(p.job.product_url).name
        assert ledger.is_done(p.job.product_url, {}) is not None
        assert_same_product(read(p.job.product_url), reference[name])
    replanned, _ = plan_stage(stage, context())
    assert [p.decision.why for p in replanned] == ["up to date"] * len(FILES)


def test_a_persistent_s3_fault_fails_that_file_with_a_clear_reason_only(
    raw_on_s3: list[str], s3: Any
) -> None:
    broken = FaultProxy(s3.endpoint, fail_paths=("T214606_Sv.zarr/",)).start()
    try:
        # Two attempts instead of six keep the test short; the path is the same.
        options = StorageOptions(
            endpoint_url=broken.url,
            options={"config_kwargs": {"retries": {"max_attempts": 2}}},
        )
        base = example_stage()
        stage = example_stage(
            destination=base.destination.model_copy(update={"storage_options": options})
        )
        planned, _ = plan_stage(stage, context())
        bad, good = sorted(planned, key=lambda p: p.job.product_url)
        make(good)
        with pytest.raises(
            StorageError, match=r"cannot write 's3://.*T214606_Sv\.zarr'"
        ):
            run_chain(bad.job)
    finally:
        broken.stop()

    assert broken.injected["persistent"] >= 2
    assert ledger.is_done(good.job.product_url, {}) is not None
    assert ledger.is_done(bad.job.product_url, {}) is None


def test_echodata_products_land_in_the_bucket_and_nothing_is_written_locally(
    raw_on_s3: list[str],
    s3: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    scratch = set(os.listdir(tempfile.gettempdir()))
    url = f"{PRODUCTS}/T214712_echodata.zarr"
    job = ChainJob(
        sources=[raw_on_s3[1]],
        steps=[
            StepCall(
                example_stage().tasks[0].module, "edf_open_raw", {"sonar_model": "EK60"}
            )
        ],
        product_url=url,
    )

    run_chain(job)

    keys = s3.keys("edf-products", "SH1707/Sv/T214712_echodata.zarr/")
    assert "SH1707/Sv/T214712_echodata.zarr/zarr.json" in keys
    assert any(k.endswith("/Environment/zarr.json") for k in keys)
    assert any(k.endswith("/Sonar/Beam_group1/zarr.json") for k in keys)
    assert list(tmp_path.iterdir()) == []
    leftovers = set(os.listdir(tempfile.gettempdir())) - scratch
    assert not [n for n in leftovers if n.startswith("edf-echodata-")]

    import echopype as ep

    echodata = ep.open_converted(url)
    assert echodata["Sonar/Beam_group1"].sizes["ping_time"] > 0


def test_a_store_being_rewritten_in_place_is_never_taken_for_done(
    raw_on_s3: list[str], s3: Any
) -> None:
    import dask.array as da
    import numpy as np

    from echodataflow.tasklib import runner
    from echodataflow.tasklib._spec import ChainState

    planned, _ = plan_stage(example_stage(), context())
    first = planned[0]
    name = Path(first.job.product_url).name
    state = ChainState(sources=first.job.sources, storage_options={}, product="Sv")
    state.dataset = xr.Dataset({"Sv": ("x", np.zeros(4))})
    runner._write(state, first.job)
    ledger.write_record(
        first.job.product_url,
        state="done",
        inputs=first.inputs,
        steps=first.steps,
        run_id="test",
        options={},
    )
    assert ledger.is_done(first.job.product_url, {}) is not None

    # A rewrite that breaks off half-way: a chunk fails after the store's metadata
    # went out, as when a worker dies mid-write.
    def lost(block: Any) -> Any:
        raise OSError("worker lost")

    broken = da.zeros((4,), chunks=2).map_blocks(lost, dtype=np.float64)
    state.dataset = xr.Dataset({"Sv": ("x", broken)})
    with pytest.raises(StorageError, match="worker lost"):
        runner._write(state, first.job)

    assert s3.keys("edf-products", f"SH1707/Sv/{name}/")
    assert ledger.is_done(first.job.product_url, {}) is None
    replanned, _ = plan_stage(example_stage(), context())
    decision = {p.job.product_url: p.decision for p in replanned}[first.job.product_url]
    assert decision.run
    assert "interrupted" in decision.why


def test_anonymous_access_lists_fingerprints_and_opens_raw_files(
    raw_on_s3: list[str], s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.make_public("edf-raw")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name)
    anonymous = storage.resolve_storage_options(
        StorageOptions(anon=True, endpoint_url=s3.endpoint)
    )
    pattern = f"s3://edf-raw/{RAW_PREFIX}/*.raw"

    found = storage.glob(pattern, anonymous)
    stamp = storage.fingerprint(found[0], anonymous)["stamp"]
    from echodataflow.tasklib._spec import ChainState
    from echodataflow.tasklib.echopype import edf_open_raw

    state = edf_open_raw(
        ChainState(sources=[found[1]], storage_options=anonymous),
        {"sonar_model": "EK60"},
    )

    assert found == sorted(raw_on_s3)
    assert stamp.startswith("ETag=")
    assert state.echodata is not None
    assert state.echodata["Sonar/Beam_group1"].sizes["ping_time"] > 0


def test_stage_level_storage_options_override_the_deployment_wide_ones_on_s3(
    raw_on_s3: list[str], s3: Any, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.budget = 0
    text = EXAMPLE.read_text()
    text = text.replace(
        "services:\n",
        # Deployment-wide: a port where nothing listens.
        "storage_options: {endpoint_url: 'http://127.0.0.1:9'}\nservices:\n",
        1,
    )
    text = text.replace(
        "      parameters: {bucket: edf-raw, survey: SH1707}\n",
        "      parameters: {bucket: edf-raw, survey: SH1707}\n"
        f"      storage_options: {{endpoint_url: '{s3.endpoint}'}}\n",
    )
    text = text.replace(
        "      path: s3://edf-products/SH1707/Sv\n",
        "      path: s3://edf-products/SH1707/Sv\n"
        f"      storage_options: {{endpoint_url: '{proxy.url}'}}\n",
    )
    (tmp_path / "deployment.yaml").write_text(text)
    deployment = resolve_deployment(load_deployment(tmp_path / "deployment.yaml"))
    stage = deployment.services[0].stages[0]

    planned, _ = plan_stage(stage, context())

    assert stage.source.storage_options == StorageOptions(endpoint_url=s3.endpoint)
    assert len(planned) == len(FILES)
    # The ledger lookups went to the destination's own endpoint (the proxy).
    assert proxy.requests >= len(FILES)


def test_credentials_from_a_prefect_block_reach_s3_and_never_the_logs(
    raw_on_s3: list[str],
    s3: Any,
    proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy.budget = 0
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    secret = "block-secret-5d1e8b"  # noqa: S105 - a test value, never a real one
    save_aws_block("edf-moto", "block-access-key", secret)
    caplog.set_level(logging.DEBUG)

    options = storage.resolve_storage_options(
        StorageOptions(block_name="edf-moto", block_type="AWS", endpoint_url=proxy.url)
    )
    found = storage.glob(f"s3://edf-raw/{RAW_PREFIX}/*.raw", options)
    storage.write_text_atomic(f"{PRODUCTS}/probe.json", "{}", options)

    assert found == sorted(raw_on_s3)
    assert proxy.access_keys == {"block-access-key"}
    assert secret not in caplog.text
    with pytest.raises(StorageError, match="block aws-credentials/missing does not"):
        storage.resolve_storage_options(
            StorageOptions(block_name="missing", block_type="AWS")
        )


def save_aws_block(name: str, key: str, secret: str) -> None:
    """Save an ``aws-credentials`` block document as prefect-aws would."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        BlockDocumentCreate,
        BlockSchemaCreate,
        BlockTypeCreate,
    )
    from prefect.exceptions import ObjectNotFound

    fields = {
        "title": "AwsCredentials",
        "type": "object",
        "properties": {
            "aws_access_key_id": {"type": "string"},
            "aws_secret_access_key": {
                "type": "string",
                "format": "password",
                "writeOnly": True,
            },
        },
        "secret_fields": ["aws_secret_access_key"],
        "block_type_slug": "aws-credentials",
        "block_schema_references": {},
    }
    with get_client(sync_client=True) as client:
        try:
            block_type = client.read_block_type_by_slug("aws-credentials")
        except ObjectNotFound:
            block_type = client.create_block_type(
                BlockTypeCreate(name="AWS Credentials", slug="aws-credentials")
            )
        schema = client.create_block_schema(
            BlockSchemaCreate(
                block_type_id=block_type.id, fields=fields, capabilities=[]
            )
        )
        client.create_block_document(
            BlockDocumentCreate(
                name=name,
                block_schema_id=schema.id,
                block_type_id=block_type.id,
                data={"aws_access_key_id": key, "aws_secret_access_key": secret},
            )
        )
