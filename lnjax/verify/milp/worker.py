"""The worker: a persistent child process that solves queries, killed at the deadline."""

from __future__ import annotations

import atexit
import math
import os
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection

from lnjax.verify.milp.network import MilpNetwork
from lnjax.verify.milp.query import MilpOptions, MilpQuery, MilpResult
from lnjax.verify.milp.solver import solve


def serve(fd: int) -> None:
    """Worker loop on a socket fd: ("net", MilpNetwork) caches; ("solve", key, query, options) answers;
    ("ping",) answers ("pong",) (the worker is up and idle)."""
    conn = Connection(fd)
    cache: dict[str, MilpNetwork] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        if msg[0] == "ping":
            conn.send(("pong",))
        elif msg[0] == "net":
            net = msg[1]
            if len(cache) >= 4:
                cache.pop(next(iter(cache)))
            cache[net.key] = net
        elif msg[0] == "solve":
            _, key, query, options = msg
            if key not in cache:
                conn.send(MilpResult(status="error", message=f"network {key} not cached in the worker"))
                continue
            conn.send(solve(cache[key], query, options))


RESERVE_S = 1.0
"""The backend is asked to stop this many seconds (at most a quarter of the budget) before the hard
deadline (`MilpOptions.stop_by`): CBC returns 0.2 s (sign mode) to 0.45 s (optimise mode, a
297-binary MLP) after its own limit, more on a loaded machine; a kill loses what it found and
restarts the worker."""

_WORKER_CMD = "import sys; from lnjax.verify.milp import serve; serve(int(sys.argv[1]))"


class MilpWorker:
    """A persistent MILP worker process with a hard wall-clock limit per solve.

    The worker is a plain `subprocess` (`python -c ... serve(fd)`) talking over a socket pair, not
    a `multiprocessing.Process`: it never re-imports the caller's `__main__` (scripts and notebooks
    need no `if __name__ == "__main__"` guard) and it is not a fork of a process running JAX.
    `solve(net, query, options, deadline=...)` returns the worker's `MilpResult`, or
    `MilpResult(status="timeout")` once `time.monotonic()` passes `deadline`: the child is killed
    (SIGKILL, by its own pid) and a fresh one started at once, importing in the background, so the
    next query rarely waits for it. Networks are sent once and cached in the worker by `net.key`.
    The solvers' console output (CBC's log, HiGHS's banner) goes to /dev/null.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._known: set[str] = set()
        self.restarts = 0

    def _start(self) -> None:
        parent, child = socket.socketpair()
        # The folder holding `lnjax` (this file is lnjax/verify/milp/worker.py).
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CMD, str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
            )
        finally:
            child.close()
        self._conn = Connection(parent.detach())
        self._known = set()

    def _kill(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            # Reap it in the background: waiting for a killed CBC process to exit can take a large
            # share of a second on a loaded machine, and the caller's budget is already spent.
            threading.Thread(target=proc.wait, daemon=True).start()

    def start(self) -> None:
        """Starts the process now (otherwise it starts on the first solve)."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._kill()
                self._start()

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Blocks until the worker process is up and idle (its imports done); returns the seconds
        waited. After a time-out the replacement process imports in the background, competing for
        the cores with whatever runs next; benchmarks call this to keep that cost out of the next
        timed query (and to charge it to the query that caused it)."""
        t0 = time.monotonic()
        self.start()
        with self._lock:
            reply = self._exchange([("ping",)], t0 + timeout)
        if reply is None:
            raise TimeoutError(f"the MILP worker did not answer within {timeout} s (restarted)")
        if reply != ("pong",):
            raise RuntimeError(f"unexpected reply from the MILP worker: {reply!r}")
        return time.monotonic() - t0

    def _exchange(self, messages: list, deadline: float):
        """Sends `messages` and returns the worker's one reply, or None if `deadline` came first —
        then the worker is killed and a fresh one started (a late reply must never be read as the
        answer to a later request). Call with the lock held."""
        if self._send(messages, deadline):
            wait = None if math.isinf(deadline) else max(deadline - time.monotonic(), 0.0)
            conn = self._conn
            if conn is not None and conn.poll(wait):
                return conn.recv()
        self._kill()
        self.restarts += 1
        self._start()
        return None

    def _send(self, messages: list, deadline: float) -> bool:
        """Sends in a thread, so a worker that is still starting (it reads only once its imports are
        done) cannot hold the caller past `deadline`; False if the deadline came first."""
        conn, errors = self._conn, []

        def run():
            try:
                if conn is None:
                    raise OSError("no connection to the worker")
                for m in messages:
                    conn.send(m)
            except Exception as e:  # also the TypeError of a connection closed under it by a kill
                errors.append(e)

        sender = threading.Thread(target=run, daemon=True)
        sender.start()
        sender.join(None if math.isinf(deadline) else max(deadline - time.monotonic(), 0.0))
        if sender.is_alive():
            return False  # the caller kills the worker, which ends the send with an error
        if errors:
            raise OSError(f"sending to the MILP worker failed: {errors[0]!r}")
        return True

    def solve(
        self, net: MilpNetwork, query: MilpQuery, options: MilpOptions, *, deadline: float = math.inf
    ) -> MilpResult:
        """Solves in the worker; `deadline` is a `time.monotonic()` time (inf: no limit)."""
        t0 = time.monotonic()
        self.start()
        with self._lock:
            try:
                messages: list[tuple] = [] if net.key in self._known else [("net", net)]
                # room to return before the kill: RESERVE_S, or a quarter of a short budget
                stop_by = min(options.stop_by, deadline - min(RESERVE_S, 0.25 * (deadline - t0)))
                messages.append(("solve", net.key, query, options._replace(stop_by=stop_by)))
                # None: the deadline came first (a restarting worker did not take the query in time,
                # or CBC overran); the worker has been replaced.
                result = self._exchange(messages, deadline)
            except (EOFError, OSError) as e:
                self._kill()
                return MilpResult(
                    status="error", message=f"MILP worker died: {e!r}", wall_s=time.monotonic() - t0
                )
            if result is None:
                return MilpResult(status="timeout", wall_s=time.monotonic() - t0)
            self._known.add(net.key)
        return result._replace(wall_s=time.monotonic() - t0)

    def close(self) -> None:
        """Stops the worker process."""
        with self._lock:
            if self._conn is not None and self._proc is not None and self._proc.poll() is None:
                try:
                    self._conn.send(None)
                    self._proc.wait(timeout=1.0)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            self._kill()


_SHARED: MilpWorker | None = None


def shared_worker() -> MilpWorker:
    """The process-wide default worker (started lazily, stopped at exit)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = MilpWorker()
        atexit.register(_SHARED.close)
    return _SHARED
