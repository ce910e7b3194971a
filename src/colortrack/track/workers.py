"""Worker processes for a batch: each takes the next item from a shared queue until none is left.

Processes are spawned, not forked (a forked PyTorch can hang in its thread pool), and each gets
its part of the torch threads. They are born ignoring Ctrl-C, which is the parent's to act on:
on Ctrl-C or SIGTERM the parent stops them with SIGTERM, which each turns into `Terminated`,
so a video half-written is removed as in a single run. A worker that dies (killed, out of
memory) costs the item it was on, reported as lost; the others go on. Workers whose parent
died (SIGKILL) finish the item in hand and leave.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from colortrack.errors import Terminated

T = TypeVar("T")
R = TypeVar("R")
_POLL = 1.0  # seconds between checks that the other side is still alive


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _serve(task: Callable[[Any], Any], items: Sequence[Any], tasks: Any, results: Any,
           threads: int) -> None:
    signal.signal(signal.SIGTERM, _terminate)
    with contextlib.suppress(Terminated):  # the parent's stop: cleaned up, nothing to print
        import torch

        torch.set_num_threads(threads)
        parent = multiprocessing.parent_process()
        while True:
            if parent is None or not parent.is_alive():
                results.cancel_join_thread()  # nobody reads them: leave without waiting
                return
            try:
                index = tasks.get(timeout=_POLL)
            except queue.Empty:
                continue
            if index is None:
                return
            results.put(("start", index, os.getpid()))
            results.put(("done", index, task(items[index])))


@contextlib.contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    """Children started in the block inherit SIGINT ignored (Python keeps it so at start)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_in_processes(
    task: Callable[[T], R], items: Sequence[T], workers: int, *, threads: int,
    done: Callable[[R], None], lost: Callable[[T, str], R],
) -> None:
    """Call `done(task(item))` for every item, the calls spread over `workers` processes;
    `task` must be picklable (a module-level function or a partial of one). An item whose
    worker died gets `done(lost(item, why))`."""
    context = multiprocessing.get_context("spawn")
    tasks, results = context.Queue(), context.Queue()
    for index in range(len(items)):
        tasks.put(index)
    for _ in range(workers):
        tasks.put(None)
    with _ctrl_c_ignored():
        processes = [context.Process(target=_serve, daemon=True, name=f"colortrack-{n}",
                                     args=(task, items, tasks, results, threads))
                     for n in range(workers)]
        for process in processes:
            process.start()
    finished = False
    try:
        _collect(items, processes, results, done, lost)
        finished = True
    finally:
        for process in processes:
            if not finished and process.is_alive():
                process.terminate()
            process.join()


def _collect(items: Sequence[T], processes: list[Any], results: Any,
             done: Callable[[R], None], lost: Callable[[T, str], R]) -> None:
    left, running = set(range(len(items))), {}  # running: worker pid -> item index
    while left:
        try:
            kind, index, value = results.get(timeout=_POLL)
        except queue.Empty:
            for process in processes:
                if not process.is_alive() and process.pid in running:
                    index = running.pop(process.pid)
                    left.discard(index)
                    done(lost(items[index], f"its worker process died (exit code "
                                            f"{process.exitcode})"))
            if not any(process.is_alive() for process in processes):
                for index in sorted(left):
                    done(lost(items[index], "not tracked: every worker process died"))
                left.clear()
            continue
        if kind == "start":
            running[value] = index
        else:
            left.discard(index)
            running = {pid: i for pid, i in running.items() if i != index}
            done(value)
