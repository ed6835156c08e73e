"""A bounded worker: blocking work (SQLite reads, DNS) done beside the main loop.

A few threads take jobs from a queue of fixed length. `try_submit` never blocks: when the
queue is full it returns None, and the caller refuses its client with a reason (or keeps
what it has); nothing a client asks for can grow the queue or the number of threads. The
threads start with the first job and end with `close()`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

log = logging.getLogger("extsock.worker")

T = TypeVar("T")
_STOP = object()


class BoundedWorker:
    """`threads` threads and a queue of `capacity` jobs waiting; `name` names the threads."""

    def __init__(self, name: str, threads: int = 2, capacity: int = 32) -> None:
        if threads < 1 or capacity < 1:
            raise ValueError("a worker needs at least one thread and room for one job")
        self.name = name
        self.threads = threads
        self.capacity = capacity
        self._jobs: queue.Queue[Any] = queue.Queue(maxsize=capacity)
        self._lock = threading.Lock()
        self._started: list[threading.Thread] = []
        self._closed = False
        self.refused = 0  # jobs refused because the queue was full

    def try_submit(self, work: Callable[[], T]) -> Future[T] | None:
        """Queue `work`; its future holds its result or exception. None: the queue is full
        (or the worker closed), nothing was queued."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                return None
            try:
                self._jobs.put_nowait((work, future))
            except queue.Full:
                self.refused += 1
                return None
            if len(self._started) < self.threads:
                thread = threading.Thread(
                    target=self._run, name=f"{self.name}-{len(self._started)}", daemon=True
                )
                self._started.append(thread)
                thread.start()
        return future

    @property
    def waiting(self) -> int:
        return self._jobs.qsize()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            work, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)

    def close(self, timeout: float = 2.0) -> None:
        """Cancel the jobs not begun and end the threads (a job under way is waited for up
        to `timeout`; its thread is a daemon thread and never holds the process)."""
        with self._lock:
            self._closed = True
            threads = list(self._started)
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                job[1].cancel()
        for _ in threads:
            try:
                self._jobs.put(_STOP, timeout=timeout)
            except queue.Full:  # every thread is stuck in a job: they are left behind
                break
        for thread in threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s: a job still runs after %gs; left behind", thread.name, timeout)
