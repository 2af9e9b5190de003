"""pydantic v2 models of the deployment and logging YAML files."""

from echodataflow.models.deployment import Deployment, Service, Stage
from echodataflow.models.logging import LoggingConfig

__all__ = ["Deployment", "LoggingConfig", "Service", "Stage"]
