# Recipes for developers and operators; `just --list` shows them.
set dotenv-load := false

venv := ".venv"
bin := venv / "bin"

# List the recipes.
default:
    @just --list

# Create the virtual environment (Python 3.13) and install echodataflow with every extra.
setup:
    test -x {{bin}}/python || PYENV_VERSION=3.13.0 pyenv exec python -m venv {{venv}} || python3.13 -m venv {{venv}}
    {{bin}}/pip install -q -U pip
    {{bin}}/pip install -q -r requirements/ci.txt -e ".[s3,hpc,docker,dev]"

# Set up, then process the sample EK60 files into Sv stores under demo-output/.
demo: setup
    {{bin}}/echodataflow validate examples/ek60-sv.yaml
    {{bin}}/echodataflow run examples/ek60-sv.yaml

# Validate a deployment file (and an optional logging file).
validate file *args:
    {{bin}}/echodataflow validate {{file}} {{args}}

# Show what a run would make and why, like make -n.
plan file *args:
    {{bin}}/echodataflow plan {{file}} {{args}}

# Run a service now, in-process, on an embedded Prefect.
run file *args:
    {{bin}}/echodataflow run {{file}} {{args}}

# Start a local Prefect server (SQLite in ~/.prefect, 127.0.0.1 only, telemetry off).
server port="4200":
    PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 {{bin}}/prefect server start --host 127.0.0.1 --port {{port}}

# Create or update each service's work pool, queue and deployment (needs PREFECT_API_URL).
deploy file *args:
    {{bin}}/echodataflow deploy {{file}} {{args}}

# Start a worker that runs the flow runs of a work pool (needs PREFECT_API_URL).
worker pool *args:
    DO_NOT_TRACK=1 {{bin}}/prefect worker start --pool {{pool}} {{args}}

# Show deployed services, pools, queues, schedules and last runs.
status:
    {{bin}}/echodataflow status

# Run the test suite (what CI runs).
test *args:
    {{bin}}/python -m pytest {{args}}

# Lint and type-check.
lint:
    {{bin}}/ruff check .
    {{bin}}/ruff format --check .
    {{bin}}/mypy

# Build the run image (BASE_IMAGE=edf/python:3.13-trixie where no registry answers).
image tag="echodataflow:local" base="python:3.13-slim":
    docker build -f containers/Dockerfile --build-arg BASE_IMAGE={{base}} -t {{tag}} .
    @docker inspect --format 'pin this id in workpool.image: {{{{.Id}}' {{tag}}

# Build a Python 3.13 base image from Debian trixie with debootstrap (no registry).
base-image tag="edf/python:3.13-trixie":
    bash containers/base.sh {{tag}}

# Download the locked wheels into containers/wheels/ so image builds need no index.
wheelhouse:
    {{bin}}/pip download --no-deps --only-binary=:all: --require-hashes -r containers/requirements.lock -d containers/wheels

# Re-resolve containers/requirements.in into the hash-locked containers/requirements.lock.
lock-image:
    {{bin}}/python containers/lock.py

# Start the local stack of compose.yaml (needs PREFECT_AUTH=user:password and `just image`).
compose-up *args:
    docker compose up -d {{args}}

# Benchmark against plain echopype (serial loop, process pool) and at survey scale; prints ratios and targets.
bench *args:
    {{bin}}/python benchmarks/bench.py {{args}}

# Time a full run of the example on the 10 Summer2017 files, then a re-run with nothing to do.
bench-rerun *args:
    {{bin}}/python benchmarks/rerun.py {{args}}

# Pool against echodataflow at several numbers of files: fixed start-up, cost per file, break-even N.
bench-scaling *args:
    {{bin}}/python benchmarks/scaling.py {{args}}
