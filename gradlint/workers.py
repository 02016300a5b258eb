"""Per-file work in forked worker processes, on a deep stack, so that one file never stops the run.

Two things can end a process on valid Python: LibCST's native parser overflows the C stack on a deep
tree (an `and` chain of 10 000 terms is flat for CPython and 10 000 levels deep for LibCST), and
Python code walking such a tree raises RecursionError. Work therefore runs in a thread with a large
stack and a high recursion limit; and, where `fork` exists, in worker processes that take one file at a
time, so that a worker that dies is known to have died on that file. That file is retried alone, in a
fresh worker, once the others are done; if it kills that one too, it is reported and the run goes on.

`concurrent.futures.ProcessPoolExecutor` cannot say which file broke a pool (every pending future
fails with BrokenProcessPool), hence this small pool.

A small run (a pre-commit hook on the files of one commit) is linted in this process, on the deep stack,
when that is safe (`in_process_is_safe`): forking a worker costs more than linting a few small files.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

STACK_BYTES = 1 << 30  # virtual; only the pages a deep tree touches are ever committed
RECURSION_LIMIT = 100_000
IN_PROCESS_FILES = 8  # a run of at most this many small files forks no worker
# Native stack that one byte of source can cost LibCST's parser, with a wide margin. The deepest trees
# CPython accepts are chains that `ast` keeps flat and LibCST nests: `a and b and ...` costs 200 bytes of
# stack a byte of source (measured: 8 and 64 MiB stacks overflow past 42 kB and 338 kB of it); adjacent
# strings stop at 3 000 (LibCST refuses more); nesting that `ast` nests too, CPython refuses first. So a
# file under STACK_BYTES / 4096 bytes (256 kB) cannot overflow the deep stack (20 times under).
STACK_PER_SOURCE_BYTE = 4096


@dataclass(frozen=True)
class Crashed:
    """The worker died on this job, twice."""

    exitcode: Optional[int]

    def describe(self) -> str:
        if self.exitcode is not None and self.exitcode < 0:
            try:
                return f"killed by {signal.Signals(-self.exitcode).name}"
            except ValueError:
                return f"killed by signal {-self.exitcode}"
        return f"exit status {self.exitcode}"


_DEEP_THREAD = "gradlint-deep-stack"


def on_deep_stack(function: Callable[[], Any]) -> Any:
    """Run `function` in a thread with a large stack and a high recursion limit; return its result."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # re-raised in the caller's thread
            outcome["error"] = error

    previous_size = threading.stack_size()
    previous_limit = sys.getrecursionlimit()
    try:
        threading.stack_size(STACK_BYTES)
        thread = threading.Thread(target=target, name=_DEEP_THREAD)
        sys.setrecursionlimit(max(previous_limit, RECURSION_LIMIT))
        thread.start()
    except (RuntimeError, ValueError, MemoryError):  # no room for such a stack: run here
        sys.setrecursionlimit(previous_limit)
        threading.stack_size(previous_size)
        return function()
    try:
        thread.join()
    finally:
        sys.setrecursionlimit(previous_limit)
        threading.stack_size(previous_size)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def fork_available() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def _serve(connection, work: Callable[[Any], Any]) -> None:
    """A worker: take a job, send back its result, until told to stop (None)."""
    def loop() -> None:
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                return
            if message is None:
                return
            index, job = message
            connection.send((index, work(job)))

    try:
        on_deep_stack(loop)
    except KeyboardInterrupt:
        pass
    finally:
        connection.close()


class _Worker:
    def __init__(self, context, work: Callable[[Any], Any]) -> None:
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, work), daemon=True)
        self.process.start()
        child.close()
        self.job: Optional[int] = None

    def give(self, index: int, job: Any) -> bool:
        self.job = index
        try:
            self.connection.send((index, job))
            return True
        except (BrokenPipeError, OSError):
            return False

    def stop(self) -> None:
        try:
            self.connection.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.connection.close()
        self.process.join()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.connection.close()


def run_isolated(work: Callable[[Any], Any], jobs: Sequence[Any], processes: int,
                 order: Optional[Sequence[int]] = None) -> list:
    """`[work(job) for job in jobs]`, in up to `processes` forked workers; a job whose worker died twice
    (once among the others, once alone) gives a `Crashed` in its place. `order`: the order to hand
    jobs out in (biggest first balances the load)."""
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("fork")
    results: list = [None] * len(jobs)
    queue = deque(order if order is not None else range(len(jobs)))
    died_once: list[int] = []
    busy: dict = {}  # connection -> worker

    def start() -> _Worker:
        worker = _Worker(context, work)
        workers.append(worker)
        return worker

    def hand_out(worker: _Worker) -> None:
        while queue:
            index = queue.popleft()
            if worker.give(index, jobs[index]):
                busy[worker.connection] = worker
                return
            worker.kill()  # it died before taking the job: the job was never run; give it to a new one
            queue.appendleft(index)
            worker = start()
        worker.stop()

    def collect(worker: _Worker, alone: bool) -> None:
        try:
            index, result = worker.connection.recv()
            results[index] = result
            return
        except (EOFError, OSError):
            pass
        worker.kill()
        if alone:
            results[worker.job] = Crashed(worker.process.exitcode)
        else:
            died_once.append(worker.job)
        worker.job = None

    workers: list[_Worker] = []
    for stream in (sys.stdout, sys.stderr):  # a child must not flush the parent's pending output again
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    try:
        for _ in range(max(1, min(processes, len(queue)))):
            hand_out(start())
        while busy:
            for connection in wait(list(busy)):
                worker = busy.pop(connection)
                collect(worker, alone=False)
                if worker.job is None:  # it died: a fresh one takes its place
                    if not queue:
                        continue
                    worker = start()
                hand_out(worker)
        for index in died_once:  # alone now, so that nothing else competes for memory or takes it down
            worker = start()
            worker.give(index, jobs[index])
            collect(worker, alone=True)
            if worker.job is not None:
                worker.stop()
    finally:
        for worker in workers:
            if worker.process.is_alive():
                worker.kill()
    return results


def in_process_is_safe(sizes: Sequence[int]) -> bool:
    """Whether files of these sizes (in bytes) can be linted in this process: few, and each too small to
    overflow the deep stack (see STACK_PER_SOURCE_BYTE). Files CPython refuses never reach LibCST."""
    return len(sizes) <= IN_PROCESS_FILES and max(sizes, default=0) <= STACK_BYTES // STACK_PER_SOURCE_BYTE


def run_in_process(work: Callable[[Any], Any], jobs: Sequence[Any]) -> Optional[list]:
    """`[work(job) for job in jobs]` here, on the deep stack; None when no deep stack can be had (then
    `in_process_is_safe` does not hold)."""
    results: list = []

    def run_all() -> bool:
        if threading.current_thread().name != _DEEP_THREAD:
            return False
        results.extend(work(job) for job in jobs)
        return True

    return results if on_deep_stack(run_all) else None


def run_here(work: Callable[[Any], Any], jobs: Sequence[Any]) -> list:
    """The same without processes (no `fork` here): on a deep stack, but a native crash ends the run."""
    return on_deep_stack(lambda: [work(job) for job in jobs])


def cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
