"""Submission of a stage's products: many per Prefect task, one Dask task each.

A Prefect task run costs about 50 ms of CPU, split between the flow process
(creating it, sending its state changes) and the Prefect server (recording them).
That is a fifth of echopype's time on a small EK60 file, and 15-40 minutes over a
survey of thousands of raw files. A stage therefore runs one Prefect task per batch
of up to :data:`BATCH_SIZE` products (unless ``prefect_config.task_per_file``). The
batch task submits each product to Dask on its own, so the scheduler still balances
files over the workers, and hands each product's outcome to the flow the moment it
finishes, so the flow records every file in the ledger and the report (and advances
the progress bar) as it finishes. Retries and the timeout of ``prefect_config``
apply to each file, not to the batch.
"""

from __future__ import annotations

import logging
import posixpath
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from distributed import Future, as_completed
from prefect import task
from prefect.cache_policies import NO_CACHE

from echodataflow.clusters import client_for
from echodataflow.logs import replay
from echodataflow.models.deployment import PrefectConfig
from echodataflow.tasklib.runner import ChainJob, ChainOutcome, run_chain

log = logging.getLogger(__name__)

BATCH_SIZE = 250
"""Products per Prefect task."""

# How often a batch with retries or timeouts pending looks at its clock (seconds).
_POLL = 0.05


class Finished(NamedTuple):
    """What became of product ``position`` of a stage's list: outcome or reason."""

    position: int
    outcome: ChainOutcome | None
    reason: str = ""


@dataclass(frozen=True)
class FilePolicy:
    """Per-file retries and timeout, from the stage's ``prefect_config``."""

    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None

    @classmethod
    def of(cls, config: PrefectConfig) -> FilePolicy:
        """Take the policy from a stage's ``prefect_config``."""
        return cls(config.retries, config.retry_delay_seconds, config.timeout_seconds)


def failure_reason(err: BaseException) -> str:
    """Return the first line of an error's message, or its type when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class _Batch:
    """The Dask futures of one batch, with their attempts, deadlines and retries."""

    def __init__(self, jobs: list[ChainJob], scheduler: str, policy: FilePolicy):
        self.client = client_for(scheduler)
        self.jobs = jobs
        self.policy = policy
        self.slots = sum(self.client.nthreads().values()) or 1
        self.index: dict[Future[Any], int] = {}
        self.deadline: dict[Future[Any], float] = {}
        self.attempts = [0] * len(jobs)
        self.waiting: list[tuple[float, int]] = []
        self.ready = as_completed(loop=self.client.loop)

    def submit(self, indices: list[int]) -> None:
        if not indices:
            return
        # A job submitted ahead of the flow (head_start.py) has a task under the
        # same key already: take it rather than start a second one.
        keys = [self.jobs[i].dask_key(self.attempts[i]) for i in indices]
        fresh = [
            (i, k)
            for i, k in zip(indices, keys, strict=True)
            if k not in self.client.futures
        ]
        # Held until the futures below hold the keys: a key no future holds is
        # released on the scheduler.
        made = self.client.map(
            run_chain, [self.jobs[i] for i, _ in fresh], key=[k for _, k in fresh]
        )
        futures: list[Future[Any]] = [Future(k, self.client) for k in keys]
        del made
        now = time.monotonic()
        ahead = len(self.index)
        for rank, (i, future) in enumerate(zip(indices, futures, strict=True)):
            self.index[future] = i
            if self.policy.timeout is not None:
                # A file waits for the ones ahead of it, ``slots`` at a time.
                self.deadline[future] = now + self.policy.timeout * (
                    (ahead + rank) // self.slots + 1
                )
        self.ready.update(futures)

    def next_finished(self) -> list[Future[Any]]:
        """Wait for finished futures; only until the next retry or deadline is due."""
        times = [t for t, _ in self.waiting] + list(self.deadline.values())
        if not times:
            return list(self.ready.next_batch(block=True))
        finished = list(self.ready.next_batch(block=False))
        if not finished:
            time.sleep(min(_POLL, max(0.0, min(times) - time.monotonic())))
        return finished

    def due_retries(self) -> list[int]:
        now = time.monotonic()
        due = [i for t, i in self.waiting if t <= now]
        self.waiting = [(t, i) for t, i in self.waiting if t > now]
        return due

    def overdue(self) -> list[Future[Any]]:
        now = time.monotonic()
        return [f for f, t in self.deadline.items() if t <= now and not f.done()]

    def results(
        self, finished: list[Future[Any]]
    ) -> list[tuple[int, ChainOutcome | None, str]]:
        """Each finished future's product index, with its outcome or failure."""
        ours = [f for f in finished if f in self.index]
        made = [f for f in ours if f.status == "finished"]
        found: list[tuple[int, ChainOutcome | None, str]] = []
        try:
            # One round trip for all finished products, not one per product.
            outcomes: list[ChainOutcome] = self.client.gather(made)
        except Exception:  # noqa: BLE001 - fall back to asking product by product
            outcomes = []
        gathered = dict(zip(made, outcomes, strict=False))
        for future in ours:
            if future in gathered:
                replay(gathered[future].logs)
                found.append((self.index[future], gathered[future], ""))
                continue
            try:
                outcome: ChainOutcome = future.result()
            except Exception as err:  # noqa: BLE001 - one file fails, the batch goes on
                replay(getattr(err, "edf_logs", []))
                found.append((self.index[future], None, failure_reason(err)))
            else:
                replay(outcome.logs)
                found.append((self.index[future], outcome, ""))
        for future in self.overdue():
            future.cancel()
            reason = f"timed out after {self.policy.timeout:g} s"
            found.append((self.index[future], None, reason))
            ours.append(future)
        for future in ours:
            del self.index[future]
            self.deadline.pop(future, None)
        return found

    def retry(self, i: int, reason: str) -> bool:
        """Schedule product ``i`` again if it has retries left; say whether it did."""
        if self.attempts[i] >= self.policy.retries:
            return False
        self.attempts[i] += 1
        log.warning(
            "retrying %s (%d of %d): %s",
            posixpath.basename(self.jobs[i].product_url),
            self.attempts[i],
            self.policy.retries,
            reason,
        )
        self.waiting.append((time.monotonic() + self.policy.retry_delay, i))
        return True


@task(cache_policy=NO_CACHE, persist_result=False)
def process_batch(
    jobs: list[ChainJob],
    first: int,
    scheduler: str,
    policy: FilePolicy,
    done: queue.Queue[Finished],
) -> int:
    """Run a batch of products on the Dask cluster; report each one on ``done``.

    ``first`` is the position of the batch's first product in the stage's list.
    Returns how many of them failed. One file's failure never stops the others.
    """
    batch = _Batch(jobs, scheduler, policy)
    batch.submit(list(range(len(jobs))))
    failed = 0
    while batch.index or batch.waiting:
        batch.submit(batch.due_retries())
        if not batch.index:
            time.sleep(
                min(
                    _POLL, max(0.0, min(t for t, _ in batch.waiting) - time.monotonic())
                )
            )
            continue
        for i, outcome, reason in batch.results(batch.next_finished()):
            if outcome is None and batch.retry(i, reason):
                continue
            failed += outcome is None
            done.put(Finished(first + i, outcome, reason))
    return failed


def _batch_name(jobs: list[ChainJob]) -> str:
    first, last = (posixpath.basename(j.product_url) for j in (jobs[0], jobs[-1]))
    if len(jobs) == 1:
        return f"{first} (1 product)"
    return f"{first} .. {last} ({len(jobs)} products)"


def run_batches(
    jobs: list[ChainJob],
    scheduler: str,
    policy: FilePolicy,
    size: int | None = None,
) -> Iterator[Finished]:
    """Run ``jobs`` as Prefect tasks of ``size`` products; yield each as it finishes.

    ``size`` defaults to :data:`BATCH_SIZE`.

    Must be called inside a flow whose task runner runs tasks in threads of this
    process (the products come back through an in-process queue).
    """
    size = size or BATCH_SIZE
    done: queue.Queue[Finished] = queue.Queue()
    batches: list[tuple[range, Any]] = []
    for start in range(0, len(jobs), size):
        chunk = jobs[start : start + size]
        future = process_batch.with_options(task_run_name=_batch_name(chunk)).submit(
            chunk, start, scheduler, policy, done
        )
        batches.append((range(start, start + len(chunk)), future))
    reported: set[int] = set()
    while len(reported) < len(jobs):
        try:
            item = done.get(timeout=1.0)
        except queue.Empty:
            yield from _crashed(batches, done, reported)
            continue
        reported.add(item.position)
        yield item
    for _, future in batches:
        future.wait()


def _crashed(
    batches: list[tuple[range, Any]],
    done: queue.Queue[Finished],
    reported: set[int],
) -> Iterator[Finished]:
    """Report the unreported products of batch tasks that ended without them."""
    for indices, future in batches:
        state = future.state
        if not state.is_final() or all(i in reported for i in indices):
            continue
        # What the batch reported before it ended is in the queue: take it first.
        while True:
            try:
                item = done.get_nowait()
            except queue.Empty:
                break
            reported.add(item.position)
            yield item
        if state.is_completed():
            continue
        reason = f"batch task {state.name}: {state.message or ''}".strip(": ")
        for i in indices:
            if i not in reported:
                reported.add(i)
                yield Finished(i, None, reason)
