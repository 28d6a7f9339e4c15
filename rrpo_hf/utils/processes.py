"""One interrupt-safe pool of worker processes: jobs run in fresh ("spawn") processes, at most `workers` at a time,
and an interrupt (Ctrl-C, SIGTERM) or an error stops every worker within seconds; none outlives the parent.

`concurrent.futures.ProcessPoolExecutor` does neither: on Ctrl-C the running workers die with the terminal's
SIGINT while the queued jobs still start and run to the end, and a `kill` of the parent leaves its workers running,
re-parented to PID 1.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Hashable, Iterable
from typing import Any


class WorkerError(RuntimeError):
    """A job raised in its worker process; the message carries the worker's traceback."""


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this process when its parent dies (Linux), so a `kill -9` of the parent leaves none."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def _worker(connection, function, args, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    # Ctrl-C reaches the whole process group; the parent alone decides, and stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        message = ("ok", function(*args))
    except BaseException as error:  # noqa: BLE001  (reported to the parent, which re-raises)
        message = ("error", f"{type(error).__name__}: {error}\n{traceback.format_exc()}")
    try:
        connection.send(message)
    finally:
        connection.close()


def stop_processes(processes: Iterable, timeout: float = 5.0) -> None:
    """SIGTERM every process, SIGKILL those still alive after `timeout` seconds, and reap them all."""
    processes = [process for process in processes if process.is_alive()]
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()


class _TerminatedBySignal(KeyboardInterrupt):
    """SIGTERM, raised where the parent waits, so the same clean-up as for Ctrl-C runs."""


def run_in_processes(
    function: Callable[..., Any],
    jobs: Iterable[tuple[Hashable, tuple]],
    workers: int,
    on_result: Callable[[Hashable, Any], None] | None = None,
    stop_timeout: float = 5.0,
) -> dict[Hashable, Any]:
    """`{key: function(*args)}` for every `(key, args)` of `jobs`, each in a fresh spawned process, `workers` at once.

    `on_result(key, result)` runs in the parent as each job finishes (e.g. to save it), so the results of finished
    jobs are kept when the run is interrupted. On Ctrl-C, SIGTERM (turned into `KeyboardInterrupt` while this runs
    in the main thread) or a job's error, no further job starts, every running worker is stopped (SIGTERM, then
    SIGKILL after `stop_timeout` seconds) and the exception propagates; a job's error comes as `WorkerError` with
    the worker's traceback. Workers ignore SIGINT (the parent stops them) and die with the parent on Linux.
    `function` must be picklable (a module-level function).
    """
    context = multiprocessing.get_context("spawn")
    pending = list(jobs)
    running: dict[Any, tuple[Hashable, Any]] = {}  # parent end of the pipe -> (key, process)
    results: dict[Hashable, Any] = {}
    restore = None
    if threading.current_thread() is threading.main_thread():

        def on_sigterm(signum, frame):
            raise _TerminatedBySignal(f"signal {signum}")

        restore = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        while pending or running:
            while pending and len(running) < max(1, workers):
                key, args = pending.pop(0)
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(target=_worker, args=(sender, function, tuple(args), os.getpid()))
                process.start()
                sender.close()
                running[receiver] = (key, process)
            waitables = [*running, *(process.sentinel for _, process in running.values())]
            ready = set(multiprocessing.connection.wait(waitables))
            for receiver in list(running):
                key, process = running[receiver]
                if receiver not in ready and process.sentinel not in ready:
                    continue
                try:
                    status, payload = receiver.recv()
                except EOFError:
                    process.join()
                    status, payload = "error", f"the worker died (exit code {process.exitcode}) without a result"
                receiver.close()
                process.join()
                del running[receiver]
                if status != "ok":
                    raise WorkerError(f"job {key!r} failed in its worker process: {payload}")
                results[key] = payload
                if on_result is not None:
                    on_result(key, payload)
    except BaseException:
        stop_processes([process for _, process in running.values()], stop_timeout)
        for receiver in running:
            receiver.close()
        raise
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
    return results


__all__ = ["WorkerError", "run_in_processes", "stop_processes"]
