"""Apply deployment-wide ``base_path`` and ``storage_options`` to every path.

One pure step after validation: it returns a new :class:`Deployment` and leaves its
input untouched, so applying it twice changes nothing.
"""

from __future__ import annotations

import posixpath
from typing import Any

from echodataflow.models.deployment import (
    Deployment,
    Source,
    Stage,
    StorageOptions,
)


def join_path(base: str | None, path: str) -> str:
    """Join ``path`` onto ``base`` unless it is absolute or a URL."""
    if "://" in path:
        return path
    if base is None or path.startswith("/"):
        return posixpath.normpath(path) if path.startswith("/") else path
    if "://" in base:
        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, path))}"
    return posixpath.normpath(posixpath.join(base, path))


# Step parameters that name files, resolved like every other path.
_FILE_PARAMS = frozenset({"xml_path", "ecs_file"})


def _source_path(base: str | None, path: Any) -> Any:
    if isinstance(path, str):
        return join_path(base, path)
    if isinstance(path, list):
        return [join_path(base, p) for p in path]
    return {group: [join_path(base, p) for p in paths] for group, paths in path.items()}


def _stage(stage: Stage, base: str | None, options: StorageOptions | None) -> Stage:
    def pick(own: StorageOptions | None) -> StorageOptions | None:
        return own if own is not None else options

    source: Source = stage.source.model_copy(
        update={
            "path": _source_path(base, stage.source.path),
            "storage_options": pick(stage.source.storage_options),
        }
    )
    update: dict[str, Any] = {
        "source": source,
        "destination": stage.destination.model_copy(
            update={
                "path": join_path(base, stage.destination.path),
                "storage_options": pick(stage.destination.storage_options),
            }
        ),
    }
    if stage.group is not None:
        update["group"] = stage.group.model_copy(
            update={
                "file": None
                if stage.group.file is None
                else join_path(base, stage.group.file),
                "storage_options": pick(stage.group.storage_options),
            }
        )
    if stage.data_quality is not None and stage.data_quality.out_path is not None:
        update["data_quality"] = stage.data_quality.model_copy(
            update={
                "out_path": join_path(base, stage.data_quality.out_path),
                "storage_options": pick(stage.data_quality.storage_options),
            }
        )
    update["tasks"] = [
        task.model_copy(
            update={
                "task_params": {
                    key: join_path(base, value) if key in _FILE_PARAMS else value
                    for key, value in task.task_params.items()
                }
            }
        )
        for task in stage.tasks
    ]
    return stage.model_copy(update=update)


def resolve_deployment(deployment: Deployment, root: str | None = None) -> Deployment:
    """Return a copy with ``base_path`` and ``storage_options`` pushed into each stage.

    Parameters
    ----------
    deployment
        The validated deployment; it is not modified.
    root
        Folder of the deployment file. Relative paths (``base_path`` included) are
        taken relative to it, so a run does not depend on the working directory.
    """
    options = deployment.storage_options
    base = deployment.base_path
    if root is not None:
        base = root if base is None else join_path(root, base)
    services = [
        service.model_copy(
            update={
                "stages": [_stage(stage, base, options) for stage in service.stages]
            }
        )
        for service in deployment.services
    ]
    return deployment.model_copy(
        update={"services": services, "base_path": None, "storage_options": None}
    )
