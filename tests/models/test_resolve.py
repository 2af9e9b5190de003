"""resolve_deployment: base_path and storage_options pushed into every path, purely."""

from __future__ import annotations

import pytest

from echodataflow.models.deployment import Deployment
from echodataflow.models.resolve import join_path, resolve_deployment


def _deployment(path: object, **top: object) -> Deployment:
    stage = {
        "tasks": [
            {
                "name": "edf_open_raw",
                "task_params": {"sonar_model": "AZFP", "xml_path": "cfg/a.XML"},
            },
            {"name": "edf_compute_Sv"},
        ],
        "source": {"path": path},
        "group": {"file": "groups/transects.txt"},
        "destination": {"path": "out/Sv"},
        "data_quality": {"checks": [{"name": "not_empty"}], "out_path": "dq"},
    }
    return Deployment.model_validate(
        {"services": [{"name": "svc", "stages": [stage]}], **top}
    )


def _stage(deployment: Deployment):  # noqa: ANN202 - a test helper
    return deployment.services[0].stages[0]


def test_base_path_is_joined_onto_every_relative_path():
    resolved = resolve_deployment(_deployment("raw/*.raw", base_path="/data/survey"))
    stage = _stage(resolved)
    assert stage.source.path == "/data/survey/raw/*.raw"
    assert stage.destination.path == "/data/survey/out/Sv"
    assert stage.group is not None
    assert stage.group.file == "/data/survey/groups/transects.txt"
    assert stage.data_quality is not None
    assert stage.data_quality.out_path == "/data/survey/dq"
    assert stage.tasks[0].task_params["xml_path"] == "/data/survey/cfg/a.XML"
    assert stage.tasks[0].task_params["sonar_model"] == "AZFP"


def test_list_source_paths_are_each_joined():
    resolved = resolve_deployment(
        _deployment(["a/*.raw", "/abs/b.raw", "s3://bucket/c.raw"], base_path="/d")
    )
    assert _stage(resolved).source.path == [
        "/d/a/*.raw",
        "/abs/b.raw",
        "s3://bucket/c.raw",
    ]


def test_mapping_source_paths_keep_their_group_names():
    resolved = resolve_deployment(
        _deployment({"t1": ["x.raw", "y.raw"], "t2": ["z.raw"]}, base_path="/d")
    )
    assert _stage(resolved).source.path == {
        "t1": ["/d/x.raw", "/d/y.raw"],
        "t2": ["/d/z.raw"],
    }


def test_url_base_path_keeps_its_scheme():
    resolved = resolve_deployment(
        _deployment("raw/*.raw", base_path="s3://bkt/survey/")
    )
    assert _stage(resolved).source.path == "s3://bkt/survey/raw/*.raw"
    assert _stage(resolved).destination.path == "s3://bkt/survey/out/Sv"


def test_relative_paths_are_taken_from_the_yaml_files_folder():
    resolved = resolve_deployment(_deployment("../data/*.raw"), root="/etc/edf/conf")
    assert _stage(resolved).source.path == "/etc/edf/data/*.raw"
    assert _stage(resolved).destination.path == "/etc/edf/conf/out/Sv"


def test_relative_base_path_is_relative_to_the_yaml_files_folder():
    resolved = resolve_deployment(
        _deployment("raw/*.raw", base_path="../survey"), root="/etc/edf/conf"
    )
    assert _stage(resolved).source.path == "/etc/edf/survey/raw/*.raw"


def test_deployment_storage_options_fill_every_path_without_its_own():
    deployment = _deployment(
        "raw/*.raw", storage_options={"anon": True, "endpoint_url": "http://h:1"}
    )
    resolved = resolve_deployment(deployment)
    stage = _stage(resolved)
    for options in (
        stage.source.storage_options,
        stage.destination.storage_options,
        stage.group.storage_options if stage.group else None,
        stage.data_quality.storage_options if stage.data_quality else None,
    ):
        assert options is not None
        assert options.anon is True
        assert options.endpoint_url == "http://h:1"


def test_a_paths_own_storage_options_win_over_the_deployment_wide_ones():
    data = _deployment("raw/*.raw").model_dump(exclude_none=True)
    data["storage_options"] = {"anon": True}
    data["services"][0]["stages"][0]["destination"]["storage_options"] = {
        "block_name": "minio",
        "block_type": "AWS",
    }
    stage = _stage(resolve_deployment(Deployment.model_validate(data)))
    assert stage.source.storage_options is not None
    assert stage.source.storage_options.anon is True
    assert stage.destination.storage_options is not None
    assert stage.destination.storage_options.block_name == "minio"
    assert stage.destination.storage_options.anon is False


def test_resolving_leaves_the_input_unchanged():
    deployment = _deployment(
        {"t1": ["x.raw"]}, base_path="/d", storage_options={"anon": True}
    )
    before = deployment.model_dump()
    resolve_deployment(deployment, root="/somewhere")
    assert deployment.model_dump() == before


def test_resolving_twice_changes_nothing_more():
    deployment = _deployment(
        ["a.raw", "b/*.raw"], base_path="base", storage_options={"anon": True}
    )
    once = resolve_deployment(deployment, root="/r")
    assert resolve_deployment(once, root="/r") == once
    assert resolve_deployment(once) == once
    assert once.base_path is None
    assert once.storage_options is None


@pytest.mark.parametrize(
    ("base", "path", "joined"),
    [
        (None, "rel/x", "rel/x"),
        ("/b", "rel/../x", "/b/x"),
        ("/b", "/abs//x", "/abs/x"),
        ("/b", "https://host/x", "https://host/x"),
        ("gs://bkt/a", "../b/x", "gs://bkt/b/x"),
    ],
)
def test_join_path_handles_relative_absolute_and_url_paths(base, path, joined):
    assert join_path(base, path) == joined
