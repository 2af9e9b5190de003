"""A real S3 server (moto) on 127.0.0.1 for the object-storage tests.

The server runs in its own process for the whole session, so runs started as
subprocesses (``echodataflow run``) and code in the test process reach the same
buckets. Each test starts from an empty server and gets the ``AWS_*`` variables
that point boto, s3fs and echopype at it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from processes import free_port

# Any key works with moto; a distinctive secret lets tests grep logs for it.
ACCESS_KEY = "edf-test-access-key"
SECRET_KEY = "edf-env-secret-7f3c9a"


@dataclass(frozen=True)
class S3Server:
    """A running moto server and helpers to look inside it."""

    endpoint: str
    log: Path
    secret: str = SECRET_KEY

    def client(self) -> Any:
        """A boto3 client: no listing cache, so it sees other processes' writes."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def reset(self) -> None:
        """Delete every bucket and object."""
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset", method="POST"
        )
        urllib.request.urlopen(request, timeout=30).close()

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` in ``bucket``."""
        pages = self.client().get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in pages.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]

    def upload(self, bucket: str, prefix: str, files: list[Path]) -> list[str]:
        """Create ``bucket`` if needed and upload ``files`` under ``prefix``."""
        client = self.client()
        if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
            client.create_bucket(Bucket=bucket)
        urls = []
        for path in files:
            key = f"{prefix}/{path.name}"
            client.upload_file(str(path), bucket, key)
            urls.append(f"s3://{bucket}/{key}")
        return urls

    def env(self) -> dict[str, str]:
        """The variables that point boto, s3fs and echopype at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def run_env(self) -> dict[str, str]:
        """The environment of an ``echodataflow`` subprocess that uses this server."""
        return {**os.environ, **self.env()}

    def make_public(self, bucket: str) -> None:
        """Let anyone list and read ``bucket``, like NOAA's public archive."""
        arn = f"arn:aws:s3:::{bucket}"
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["s3:GetObject", "s3:ListBucket"],
                    "Resource": [arn, f"{arn}/*"],
                }
            ],
        }
        self.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))

    def make_bucket(self, bucket: str) -> None:
        """Create an empty bucket."""
        self.client().create_bucket(Bucket=bucket)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Start ``moto_server`` on a free port of 127.0.0.1; stop it at the end."""
    executable = shutil.which("moto_server") or str(
        Path(sys.executable).with_name("moto_server")
    )
    if not Path(executable).exists():
        pytest.fail("moto_server not found; install moto[server] (requirements/ci.txt)")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [executable, "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = S3Server(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                server.reset()
                break
            except (urllib.error.URLError, ConnectionError) as err:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start: {err}; see {log}")
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """An empty S3 server, with the environment pointing every client at it."""
    s3_server.reset()
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    # s3fs keeps file-system instances (and their listings) per process.
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    return s3_server


@pytest.fixture(scope="session")
def reference(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The example's products of the two files made on local disk, by name."""
    from products import disk_products

    return disk_products(shared_data, tmp_path_factory.mktemp("disk-run"))
