"""`civicgrid serve --workers N`: N web processes, each listening on a socket of its own.

Every socket is bound to the same address with `SO_REUSEPORT`, so the kernel spreads new
connections evenly over the processes (by a hash of the client's address and port). uvicorn's
own multi-process mode shares one socket, and whichever process wakes first takes a whole burst
of connections: one process then held most of them while the other ran batches of one or two
reports (docs/benchmarks.md, issue 3). The supervisor here owns the sockets, so a process that
dies is replaced on the same socket without dropping the connections queued on it.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

APP = "civicgrid.main:create_app"
BACKLOG = 2048


class AddressInUse(RuntimeError):
    pass


@dataclass
class _Slot:
    sock: socket.socket
    process: BaseProcess
    ready: Any  # a multiprocessing Event: set once the process serves


def bind(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on host:port sharing it by `SO_REUSEPORT`. The address is first
    bound once without it: a server already on the port (say, a second `civicgrid serve` by
    mistake) is an error here, rather than a silent partner taking half the connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.create_server((host, port), family=family).close()
        return [
            socket.create_server((host, port), family=family, backlog=BACKLOG, reuse_port=True)
            for _ in range(count)
        ]
    except OSError as exc:
        raise AddressInUse(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from exc


def serve_processes(host: str, port: int, workers: int, log_level: str) -> int:
    """Run `workers` web processes until SIGINT or SIGTERM. One that ends after it has served
    is replaced; one that ends before (configuration, database, code) would fail the same way
    again, so everything stops. Returns the exit code: 0, or 1 when a process could not start."""
    sockets = bind(host, port, workers)
    spawn = multiprocessing.get_context("spawn")
    stop = threading.Event()
    failed = False

    def start(sock: socket.socket, k: int) -> _Slot:
        ready = spawn.Event()
        process = spawn.Process(target=_web_process, args=(sock, log_level, ready), name=f"civicgrid-web-{k}")
        process.start()
        return _Slot(sock, process, ready)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    slots = [start(sock, k) for k, sock in enumerate(sockets)]
    log.info("serving on http://%s:%d with %d web processes", host, port, workers)
    try:
        while not stop.wait(0.5):
            for k, slot in enumerate(slots):
                code = slot.process.exitcode
                if code is None:
                    continue
                if not slot.ready.is_set():
                    log.error("web process %d stopped at start-up (exit code %s)", k, code)
                    failed = True
                    stop.set()
                    break
                log.warning("web process %d ended (exit code %s); starting another", k, code)
                slots[k] = start(slot.sock, k)
    finally:
        for slot in slots:
            if slot.process.is_alive():
                slot.process.terminate()  # SIGTERM: uvicorn finishes the requests in hand
        deadline = time.monotonic() + 30
        for slot in slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join()
        for sock in sockets:
            sock.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 1 if failed else 0


def _web_process(sock: socket.socket, log_level: str, ready: Any) -> None:
    """One web process: the application on its own socket (in a new interpreter: spawn)."""
    import uvicorn

    from civicgrid.core.logging import configure

    configure(log_level.upper())
    config = uvicorn.Config(
        APP,
        factory=True,
        log_level=log_level,
        access_log=False,  # our own access log leaves out query strings (personal data)
        backlog=BACKLOG,
        log_config=None,  # keep `configure`'s handlers
    )
    server = uvicorn.Server(config)

    def tell_when_serving() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            ready.set()

    threading.Thread(target=tell_when_serving, daemon=True).start()
    server.run(sockets=[sock])
