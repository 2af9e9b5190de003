"""Deploy services on a Prefect server: ``deploy_echodataflow`` and ``_deploy_service``.

Built in issue #3; this placeholder keeps ``Service.deploy`` importable.
"""

from __future__ import annotations

from typing import Any

from echodataflow.models.deployment import Service


def apply_service(service: Service, logging_dict: dict[str, Any] | None) -> str:
    """Create or update the Prefect deployment of one service; return its id."""
    raise NotImplementedError("the deployment engine arrives with issue #3")
