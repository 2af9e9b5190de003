"""compose.yaml, parsed and checked: what a `docker compose up` would start.

PostgreSQL cannot be pulled on the build machines, so the stack itself is not
started here (README, Containers); its parts are: the run image, the server, the
docker worker and moto run in the other tests of this folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from echodataflow.models.load import load_deployment

REPO = Path(__file__).resolve().parents[2]
RUN_IMAGE = "${EDF_IMAGE:-echodataflow:local}"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())
    return loaded


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def test_the_stack_has_a_database_server_store_worker_and_one_shot_deploy(
    compose: dict[str, Any],
) -> None:
    services = _services(compose)
    assert set(services) == {"postgres", "prefect-server", "s3", "deploy", "worker"}
    assert services["postgres"]["image"].startswith("postgres:")
    for name in ("prefect-server", "s3", "deploy", "worker"):
        assert services[name]["image"] == RUN_IMAGE, name
    assert services["deploy"]["restart"] == "no"
    assert services["worker"]["command"][:3] == ["prefect", "worker", "start"]
    assert services["worker"]["command"][-2:] == ["--type", "docker"]


def test_every_published_port_is_bound_to_localhost_unless_the_user_opts_out(
    compose: dict[str, Any],
) -> None:
    published = {
        name: service.get("ports", []) for name, service in _services(compose).items()
    }
    assert published["prefect-server"]
    assert published["s3"]
    assert not published["postgres"]
    assert not published["worker"]
    for name, ports in published.items():
        for port in ports:
            assert re.fullmatch(
                r"\$\{EDF_BIND:-127\.0\.0\.1\}:\$\{\w+:-\d+\}:\d+", port
            ), (
                name,
                port,
            )


def test_the_prefect_api_requires_basic_authentication_everywhere(
    compose: dict[str, Any],
) -> None:
    services = _services(compose)
    server_env = services["prefect-server"]["environment"]
    assert server_env["PREFECT_SERVER_API_AUTH_STRING"].startswith("${PREFECT_AUTH:?")
    assert (
        "postgresql+asyncpg://" in server_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    )
    for client in ("deploy", "worker"):
        env = services[client]["environment"]
        assert (
            env["PREFECT_API_AUTH_STRING"]
            == server_env["PREFECT_SERVER_API_AUTH_STRING"]
        )
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    # No password is written in the file itself.
    text = (REPO / "compose.yaml").read_text()
    assert not re.search(r"AUTH[A-Z_]*: *[\"']?\w+:\w+", text)


def test_services_start_in_order_behind_health_checks(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name in ("postgres", "prefect-server", "s3"):
        assert services[name]["healthcheck"]["test"], name
    assert services["prefect-server"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"}
    }
    assert services["deploy"]["depends_on"] == {
        "prefect-server": {"condition": "service_healthy"},
        "s3": {"condition": "service_healthy"},
    }
    assert services["worker"]["depends_on"]["deploy"] == {
        "condition": "service_completed_successfully"
    }
    # The server's probe is the one path Prefect leaves open without credentials.
    assert "/api/health" in " ".join(services["prefect-server"]["healthcheck"]["test"])


def test_volumes_and_network_match_what_the_example_service_mounts(
    compose: dict[str, Any],
) -> None:
    services = _services(compose)
    assert "/var/run/docker.sock:/var/run/docker.sock" in services["worker"]["volumes"]
    assert "edf-data:/data" in services["deploy"]["volumes"]
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    volume_name = compose["volumes"]["edf-data"]["name"]
    network_name = compose["networks"]["default"]["name"]

    deployment = load_deployment(REPO / "examples" / "compose-sv.yaml")
    workpool = deployment.services[0].infrastructure.workpool
    assert workpool.type == "docker"
    assert workpool.name in services["worker"]["command"]
    assert workpool.docker is not None
    assert f"{volume_name}:/data" in workpool.docker.volumes
    assert workpool.job_variables["networks"] == [network_name]
    assert workpool.image == RUN_IMAGE.removeprefix("${EDF_IMAGE:-").rstrip("}")
