"""The temporary Prefect server of ``echodataflow run``, started before anything else.

Left to itself, Prefect starts its temporary server when the first flow is called:
the run process first imports the whole server application (seconds of CPU it never
uses) and then waits for the server process to import it again and answer. Here the
server process is started as soon as the command starts, without importing Prefect,
so that it comes up while the deployment is loaded, planned and the Dask cluster
starts; the run then talks to it through ``PREFECT_API_URL`` like any other server.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import IO

from echodataflow.exceptions import ServerUnreachableError

log = logging.getLogger(__name__)

# Prefect's own temporary server is started with these: no UI, and only the
# services a temporary server needs.
_SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
    # At each start the server imports every installed Prefect collection to see
    # whether there are block types to register (about 0.7 s of its 4 s start-up
    # here). A run only reads block documents by name, and a saved document's type
    # is in the database already.
    "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
    "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
}
_ATTEMPTS = 3
# A line such as "sqlalchemy.exc.OperationalError: unable to open database file".
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmbeddedServer:
    """A Prefect API server process that lives as long as this command.

    ``start`` returns at once; ``wait_ready`` blocks until the API answers. The
    process is stopped by ``stop``, and at the latest when the interpreter exits,
    after Prefect's own exit handlers have sent their last logs and events (exit
    handlers run in reverse order of registration, and this one is registered
    before Prefect is imported).
    """

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._ready = False

    @property
    def api_url(self) -> str:
        """The API address, valid once ``start`` has returned."""
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        """Start the server process without waiting for it."""
        self._spawn()
        atexit.register(self.stop)

    def _spawn(self) -> None:
        if self._output is not None:
            self._output.close()
        self.port = _free_port()
        # The server's output is kept to explain a failed start, not shown.
        self._output = tempfile.TemporaryFile(prefix="edf-prefect-server-")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env={**os.environ, **_SERVER_ENV},
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float) -> None:
        """Block until the API answers, restarting on a port taken meanwhile.

        Raises
        ------
        ServerUnreachableError
            When the server exits or does not answer within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        attempts = 1
        while not self._ready:
            assert self.process is not None, "start() was not called"
            code = self.process.poll()
            if code is not None:
                # Another process may have taken the port between probe and bind.
                if "address already in use" in self._output_text() and (
                    attempts < _ATTEMPTS
                ):
                    attempts += 1
                    self._spawn()
                    continue
                raise ServerUnreachableError(
                    f"the embedded Prefect server exited with code {code}: "
                    f"{self._reason()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServerUnreachableError(
                    f"the embedded Prefect server did not answer in {timeout:.0f} s"
                )
            self._ready = self._answers()
            if not self._ready:
                time.sleep(0.1)
        log.info("embedded Prefect server ready at %s", self.api_url)

    def stop(self) -> None:
        """Stop the server process (safe to call twice)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._output is not None:
            self._output.close()
            self._output = None

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _output_text(self) -> str:
        if self._output is None:
            return ""
        self._output.seek(0)
        return self._output.read().decode(errors="replace")

    def _reason(self) -> str:
        """Return the server's last exception line, or else its last line."""
        lines = [line.strip() for line in self._output_text().splitlines()]
        errors = [line for line in lines if _EXCEPTION_LINE.match(line)]
        if errors:
            return errors[-1]
        return next((line for line in reversed(lines) if line), "no output")
