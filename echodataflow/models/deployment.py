"""pydantic models of the deployment YAML: services, stages, steps and their I/O.

The models validate and carry defaults; they do no I/O and know nothing of Prefect
runs. Deployment-wide ``base_path`` and ``storage_options`` are applied afterwards by
:func:`resolve_deployment`, a pure function that returns a new model.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    field_validator,
    model_validator,
)

DEFAULT_RAW_REGEX = r"(.*)-?D(?P<date>\w{1,8})-T(?P<time>\w{1,6})"
DEFAULT_STEP_MODULE = "echodataflow.tasklib.echopype"
DEFAULT_STAGE_MODULE = "echodataflow.deployment.flow"
_ANCHOR_FORMAT = "D%Y%m%d-T%H%M%S"
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

Name = Annotated[str, Field(pattern=_NAME_PATTERN, max_length=100)]


class _Model(BaseModel):
    """Every configuration model rejects unknown keys and is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageOptions(_Model):
    """How to reach a storage location: a Prefect block, anonymous, or fsspec options.

    Credentials never live here: a block is named and loaded inside the run.
    """

    block_name: str | None = Field(
        None, description="Name of a saved Prefect credentials block."
    )
    block_type: Literal["AWS", "S3Bucket"] | None = Field(
        None, description="Kind of the Prefect block named by block_name."
    )
    anon: bool = Field(False, description="Anonymous access (public buckets).")
    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint, e.g. http://127.0.0.1:5555."
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Further fsspec keyword arguments, passed through unchanged.",
    )

    @model_validator(mode="after")
    def _block_fields_together(self) -> Self:
        if (self.block_name is None) != (self.block_type is None):
            raise ValueError("block_name and block_type must be given together")
        if self.anon and self.block_name is not None:
            raise ValueError("anon: true cannot be combined with a credentials block")
        secret_keys = {"key", "secret", "token", "password", "aws_secret_access_key"}
        named = secret_keys & set(self.options)
        if named:
            raise ValueError(
                f"secrets {sorted(named)} must not be written in the deployment file; "
                "save them in a Prefect block and name it with block_name/block_type"
            )
        return self


class Schedule(_Model):
    """When a service runs: every ``interval_mins`` from ``anchor_date``, or by cron."""

    anchor_date: datetime | None = Field(
        None,
        description="Start of the interval schedule, DYYYYMMDD-THHMMSS (UTC).",
        examples=["D20241007-T035100"],
    )
    interval_mins: PositiveInt | None = Field(None, description="Minutes between runs.")
    cron: str | None = Field(None, description="Cron expression, e.g. */10 * * * *.")
    timezone: str = Field("UTC", description="Time zone of the cron expression.")

    @field_validator("anchor_date", mode="before")
    @classmethod
    def _parse_anchor(cls, value: Any) -> Any:
        if isinstance(value, str) and value.startswith("D"):
            try:
                return datetime.strptime(value, _ANCHOR_FORMAT).replace(tzinfo=UTC)
            except ValueError as err:
                raise ValueError(
                    f"anchor_date {value!r} is not DYYYYMMDD-THHMMSS, "
                    "e.g. D20241007-T035100"
                ) from err
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.interval_mins is None) == (self.cron is None):
            raise ValueError("give exactly one of interval_mins and cron")
        if self.cron is not None and len(self.cron.split()) not in (5, 6):
            raise ValueError(f"cron {self.cron!r} must have 5 or 6 fields")
        if self.cron is not None and self.anchor_date is not None:
            raise ValueError("anchor_date applies to interval_mins only, not to cron")
        return self


class LoggingRef(_Model):
    """Which entry of the logging YAML a service uses."""

    handler: str = Field(min_length=1, description="Key in the logging YAML.")


_VOLUME_MODES = ("ro", "rw")
_SECRET_ENV = re.compile(r"SECRET|PASSWORD|TOKEN|AUTH_STRING|API_KEY|ACCESS_KEY", re.I)
# DockerOptions field -> the prefect-docker job variable it sets.
DOCKER_JOB_VARIABLES = {
    "volumes": "volumes",
    "env": "env",
    "network_mode": "network_mode",
    "mem_limit": "mem_limit",
    "pull_policy": "image_pull_policy",
}


class DockerOptions(_Model):
    """How a docker work pool starts the container of each flow run."""

    volumes: list[str] = Field(
        default_factory=list,
        description="Mounts SOURCE:TARGET[:ro|rw]; SOURCE an absolute host path or a "
        "named volume, TARGET absolute. Mount shared storage at the path the "
        "deployment file uses.",
        examples=[["/data/raw:/data/raw:ro", "/data/products:/data/products"]],
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment of the run container. No secrets: the pool is "
        "stored in the Prefect database; use Prefect blocks.",
    )
    network_mode: str | None = Field(
        None, min_length=1, description="Docker network mode, e.g. host or bridge."
    )
    mem_limit: str | None = Field(
        None,
        pattern=r"^\d+[bkmgBKMG]?$",
        description="Memory limit of the container, e.g. 8g.",
    )
    pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="When the worker pulls the image; Never for local images."
    )

    @field_validator("volumes")
    @classmethod
    def _volume_specs(cls, value: list[str]) -> list[str]:
        for spec in value:
            parts = spec.split(":")
            mode_ok = len(parts) == 2 or (len(parts) == 3 and parts[2] in _VOLUME_MODES)
            if not mode_ok or not parts[0] or not parts[1].startswith("/"):
                raise ValueError(
                    f"volume {spec!r} is not SOURCE:TARGET[:ro|rw] with an "
                    "absolute TARGET, e.g. /data/raw:/data/raw:ro"
                )
            if not parts[0].startswith("/") and "/" in parts[0]:
                raise ValueError(
                    f"volume {spec!r}: SOURCE must be an absolute path or a named "
                    "volume; relative paths would depend on the worker's folder"
                )
        return value

    @field_validator("env")
    @classmethod
    def _no_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"env name {name!r} is not a valid variable name")
            if _SECRET_ENV.search(name):
                raise ValueError(
                    f"env {name!r} looks like a secret; secrets must not be written "
                    "in the deployment file: give them to the worker's environment "
                    "or save them in a Prefect block"
                )
        return value


class Workpool(_Model):
    """The Prefect work pool and queue that serve a service's runs."""

    name: Name = Field("echodataflow-pool", description="Prefect work pool name.")
    workqueue: Name = Field("default", description="Work queue inside the pool.")
    type: Literal["process", "docker", "slurm", "pbs"] = Field(
        "process", description="Where flow runs execute."
    )
    image: str | None = Field(
        None, description="Pinned container image (docker, Apptainer on HPC)."
    )
    concurrency_limit: PositiveInt | None = Field(
        None, description="Most flow runs of the pool at once."
    )
    job_variables: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the pool's job template."
    )
    docker: DockerOptions | None = Field(
        None, description="Container settings of a docker pool (type: docker)."
    )

    @model_validator(mode="after")
    def _docker_settings(self) -> Self:
        if self.docker is None:
            return self
        if self.type != "docker":
            raise ValueError(f"docker settings apply to type: docker, not {self.type}")
        given = {
            DOCKER_JOB_VARIABLES[key]
            for key in self.docker.model_fields_set
            if getattr(self.docker, key)
        }
        twice = sorted(given & set(self.job_variables))
        if twice:
            raise ValueError(
                f"job_variables {twice} are also set under docker; give each once"
            )
        return self


class Adaptive(_Model):
    """Bounds for an adaptive Dask cluster."""

    minimum: Annotated[int, Field(ge=0)] = 0
    maximum: PositiveInt

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.minimum > self.maximum:
            raise ValueError(
                f"minimum ({self.minimum}) must not exceed maximum ({self.maximum})"
            )
        return self


class JobQueueOptions(_Model):
    """dask-jobqueue options for SLURM and PBS clusters: one batch job per worker set.

    Each job runs ``processes`` Dask workers sharing ``cores`` and ``memory``.
    Workers retire before ``walltime`` so the scheduler never kills one mid-file.
    """

    queue: str | None = Field(None, description="Partition (SLURM) or queue (PBS).")
    account: str | None = Field(None, description="Account charged for the jobs.")
    walltime: str = Field(
        "01:00:00",
        pattern=r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$",
        description="Time limit of each job, [D-]HH:MM:SS.",
    )
    cores: PositiveInt = Field(1, description="Cores of each job.")
    memory: str = Field(
        "4GB",
        pattern=r"^\d+(\.\d+)?\s*[KMGT]i?B$",
        description="Memory of each job, e.g. 4GB.",
    )
    processes: PositiveInt = Field(1, description="Dask workers in each job.")
    job_extra_directives: list[str] = Field(
        default_factory=list, description="Further #SBATCH/#PBS directives."
    )
    job_directives_skip: list[str] = Field(
        default_factory=list,
        description="Leave out generated directives containing these strings.",
    )
    job_script_prologue: list[str] = Field(
        default_factory=list, description="Shell lines run before the worker starts."
    )
    resource_spec: str | None = Field(
        None, description="PBS -l resource request, e.g. select=1:ncpus=4:mem=8GB."
    )
    interface: str | None = Field(
        None, description="Network interface of scheduler and workers, e.g. ib0."
    )
    local_directory: str | None = Field(
        None, description="Node-local scratch folder of the workers."
    )
    log_directory: str | None = Field(
        None, description="Folder of the jobs' stdout and stderr files."
    )
    python: str | None = Field(
        None,
        description="Python of the workers; default: this one, or python in the image.",
    )
    death_timeout: PositiveInt = Field(
        60, description="Seconds a worker waits for a lost scheduler before exiting."
    )
    worker_extra_args: list[str] = Field(
        default_factory=list,
        description="Further dask worker arguments; --lifetime here replaces ours.",
    )
    image: str | None = Field(
        None,
        description="Apptainer image of the workers (.sif path, docker:// or "
        "oras:// URL, or a registry image); default: the work pool's image.",
    )
    apptainer: str = Field(
        "apptainer", min_length=1, description="Apptainer command, e.g. singularity."
    )
    apptainer_args: list[str] = Field(
        default_factory=list,
        description="Arguments of apptainer exec, e.g. [--bind, /data].",
    )

    @field_validator(
        "job_extra_directives",
        "job_directives_skip",
        "job_script_prologue",
        "worker_extra_args",
        "apptainer_args",
    )
    @classmethod
    def _one_line_each(cls, value: list[str]) -> list[str]:
        # Every entry becomes one line (or word) of a batch script.
        for entry in value:
            if "\n" in entry or "\r" in entry:
                raise ValueError(f"{entry!r} must be a single line")
        return value


class Cluster(_Model):
    """The Dask cluster a service (or one stage) runs on."""

    type: Literal["local", "address", "slurm", "pbs"] = "local"
    workers: PositiveInt | None = Field(
        None, description="Workers of a fixed-size cluster; default: CPU cores."
    )
    threads_per_worker: PositiveInt = 1
    memory_limit: str | None = Field(None, description="Per-worker memory limit.")
    address: str | None = Field(
        None, description="Scheduler address, for type: address."
    )
    adaptive: Adaptive | None = None
    jobqueue: JobQueueOptions | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.type == "address" and not self.address:
            raise ValueError("type: address needs an address, e.g. tcp://host:8786")
        if self.type != "address" and self.address:
            raise ValueError(
                f"address is only used with type: address, not {self.type}"
            )
        if self.address and not re.match(
            r"^(tcp|tls|ucx|inproc)://.+:\d+$", self.address
        ):
            raise ValueError(
                f"address {self.address!r} is not a scheduler address like "
                "tcp://host:8786"
            )
        if self.jobqueue is not None and self.type not in ("slurm", "pbs"):
            raise ValueError("jobqueue options apply to type slurm or pbs only")
        if self.adaptive is not None and self.workers is not None:
            raise ValueError("give either workers (fixed size) or adaptive, not both")
        if self.type in ("slurm", "pbs"):
            # A batch job's size is set by its cores, processes and memory.
            if self.threads_per_worker != 1 or self.memory_limit is not None:
                raise ValueError(
                    f"type: {self.type} sizes workers with jobqueue.cores, "
                    "jobqueue.processes and jobqueue.memory, not threads_per_worker "
                    "or memory_limit"
                )
            spec = self.jobqueue.resource_spec if self.jobqueue else None
            if spec is not None and self.type != "pbs":
                raise ValueError("jobqueue.resource_spec applies to type pbs only")
        return self


class Infrastructure(_Model):
    """Where a service's runs execute."""

    workpool: Workpool = Field(default_factory=Workpool)
    cluster: Cluster = Field(default_factory=Cluster)


class Task(_Model):
    """One processing step of a stage and the parameters given to it."""

    name: str = Field(min_length=1, description="Registered step name.")
    module: str = Field(DEFAULT_STEP_MODULE, description="Module holding the step.")
    task_params: dict[str, Any] = Field(default_factory=dict)


class PrefectConfig(_Model):
    """Prefect options of a stage: per-file retries and timeout, and task runs."""

    retries: Annotated[int, Field(ge=0, le=20)] = Field(
        0, description="Times a failed product is tried again before it is failed."
    )
    retry_delay_seconds: Annotated[float, Field(ge=0)] = 0
    timeout_seconds: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Seconds one product may take; counted per product."
    )
    task_per_file: bool = Field(
        False,
        description="One Prefect task run per product instead of one per batch of "
        "up to 250 products. Each task run costs about 50 ms of CPU (flow process "
        "and Prefect server), a fifth of what echopype spends on a small EK60 file; "
        "per-file retries, timeouts, ledger records and run-log lines are the same "
        "either way.",
    )


class StageOptions(_Model):
    """Behaviour switches of a stage."""

    use_offline: bool = Field(True, description="Skip products that are up to date.")
    save_offline: bool = Field(
        True, description="Keep this stage's products after the service run."
    )
    group: bool = Field(
        False,
        description="Without a group file: true puts all files in one group, "
        "false makes each file its own group.",
    )


class WindowOptions(_Model):
    """Select the files of the last N time windows before the run's scheduled time."""

    time_travel_hours: Annotated[int, Field(ge=0)] = 0
    time_travel_mins: Annotated[int, Field(ge=0)] = 0
    window_hours: Annotated[int, Field(ge=0)] = 0
    window_mins: Annotated[int, Field(ge=0)] = 0
    number_of_windows: PositiveInt = 1

    @model_validator(mode="after")
    def _positive_window(self) -> Self:
        if self.window_hours * 60 + self.window_mins <= 0:
            raise ValueError("window length must be positive: set window_hours/mins")
        return self


SourcePath = str | list[str] | dict[str, list[str]]


class Source(_Model):
    """Where a stage's input files are and how to read their timestamps."""

    path: SourcePath = Field(
        description="Path, glob or URL; a list of them; or group name to list."
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Jinja variables used in path."
    )
    window_options: WindowOptions | None = None
    storage_options: StorageOptions | None = None
    raw_regex: str = Field(
        DEFAULT_RAW_REGEX, description="Regex with date and time groups."
    )

    @field_validator("path")
    @classmethod
    def _non_empty(cls, value: SourcePath) -> SourcePath:
        if isinstance(value, str) and not value.strip():
            raise ValueError("path must not be empty")
        if isinstance(value, list | dict) and not value:
            raise ValueError("path must name at least one file or glob")
        if isinstance(value, dict):
            for group, paths in value.items():
                if not paths:
                    raise ValueError(f"group {group!r} lists no paths")
        return value

    @field_validator("raw_regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            pattern = re.compile(value)
        except re.error as err:
            raise ValueError(f"raw_regex {value!r} does not compile: {err}") from err
        missing = {"date", "time"} - set(pattern.groupindex)
        if missing:
            raise ValueError(
                f"raw_regex needs named groups date and time; missing {sorted(missing)}"
            )
        return value


class Group(_Model):
    """How files map to groups (transects)."""

    file: str | None = Field(
        None, description="Group file (.txt, or .zip of .txt) listing raw file names."
    )
    grouping_regex: str | None = Field(
        None, description="Regex with a transect_num group, matched on the file name."
    )
    storage_options: StorageOptions | None = None

    @field_validator("grouping_regex")
    @classmethod
    def _has_transect(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            pattern = re.compile(value)
        except re.error as err:
            raise ValueError(
                f"grouping_regex {value!r} does not compile: {err}"
            ) from err
        if "transect_num" not in pattern.groupindex:
            raise ValueError("grouping_regex needs a named group transect_num")
        return value


class Destination(_Model):
    """Where a stage writes its products."""

    path: str = Field(min_length=1)
    storage_options: StorageOptions | None = None


class Check(_Model):
    """One data-quality check: a built-in name or a dotted path."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class DataQuality(_Model):
    """Checks run on a stage's products."""

    checks: list[Check] = Field(min_length=1)
    block_downstream: bool = False
    out_path: str | None = None
    storage_options: StorageOptions | None = None


class Stage(_Model):
    """One step of a service: a stage flow applied to a source, written to a sink."""

    name: str = Field("Sv_flow", description="Stage flow function in module.")
    module: str = Field(DEFAULT_STAGE_MODULE)
    tasks: list[Task] = Field(min_length=1)
    prefect_config: PrefectConfig = Field(default_factory=PrefectConfig)
    options: StageOptions = Field(default_factory=StageOptions)
    source: Source
    group: Group | None = None
    destination: Destination
    data_quality: DataQuality | None = None
    cluster: Cluster | None = Field(None, description="A cluster for this stage only.")


class Service(_Model):
    """A named pipeline of stages with its schedule and infrastructure."""

    name: Name
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    schedule: Schedule | None = None
    logging: LoggingRef | None = None
    infrastructure: Infrastructure = Field(default_factory=Infrastructure)
    stages: list[Stage] = Field(min_length=1)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        if any(not tag.strip() for tag in value):
            raise ValueError("tags must be non-empty strings")
        return list(dict.fromkeys(tag.strip() for tag in value))

    def deploy(self, logging_dict: dict[str, Any] | None = None) -> str:
        """Create or update this service's Prefect deployment; return its id.

        A thin entry into the deployment engine, imported late so that the
        models import nothing of Prefect.
        """
        from echodataflow.deployment.deployment_engine import apply_service

        return apply_service(self, logging_dict)


class Deployment(_Model):
    """The whole deployment file."""

    base_path: str | None = Field(None, description="Root of relative paths.")
    storage_options: StorageOptions | None = Field(
        None, description="Default storage options of every path."
    )
    services: list[Service] = Field(min_length=1)

    # A field validator, not a model one, so that the error is located at services.
    @field_validator("services")
    @classmethod
    def _unique_names(cls, services: list[Service]) -> list[Service]:
        names = [service.name for service in services]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"service names must be unique; repeated: {repeated}")
        return services

    def service(self, name: str | None) -> Service:
        """Return the service called ``name``, or the only one when ``name`` is None.

        Raises
        ------
        KeyError
            When no service has that name, or a name is needed and not given.
        """
        names = [service.name for service in self.services]
        if name is None:
            if len(self.services) == 1:
                return self.services[0]
            raise KeyError(f"the file has several services; pick one of {names}")
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(f"no service {name!r}; the file has {names}")
