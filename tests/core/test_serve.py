"""`civicgrid serve --workers N`: N web processes answering on one port, each on a socket of its
own (the kernel spreads connections over them), the background worker once in a process of its
own, a web process that dies replaced, and Ctrl-C stopping every one of them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

CLI = [str(Path(sys.executable).parent / "civicgrid")]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _environment(tmp_path: Path, embedded_worker: bool) -> dict[str, str]:
    env = {
        **os.environ,
        "CIVICGRID_DATA_DIR": str(tmp_path / "data"),
        "CIVICGRID_EMBEDDED_WORKER": str(embedded_worker).lower(),
        "CIVICGRID_LOG_LEVEL": "WARNING",
    }
    env.pop("CIVICGRID_DATABASE_URL", None)  # SQLite in the data dir
    subprocess.run([*CLI, "db", "upgrade"], env=env, check=True, capture_output=True)
    return env


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 120  # interpreters start slowly on a busy 2-core machine
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "serve --workers 2 did not answer"
        time.sleep(0.3)


def _connections_held(pid: int, port: int) -> int:
    """Established TCP connections to `port` whose server end this process holds."""
    mine = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(target[8:-1])
    held = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01" and fields[9] in mine:
            held += 1
    return held


def test_several_web_processes_one_worker_and_all_stop_on_ctrl_c(tmp_path: Path) -> None:
    port = _free_port()
    env = _environment(tmp_path, embedded_worker=True)
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--workers", "2"], env=env)
    try:
        _wait_for(port)
        # The supervisor's children: the worker and the two web processes (beside them,
        # perhaps, multiprocessing's resource tracker).
        kids = [k for k in _children(proc.pid) if "resource_tracker" not in _cmdline(k)]
        assert len(kids) == 3, [_cmdline(k) for k in kids]
        for _ in range(20):  # both web processes answer; the worker stays up beside them
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert all(_alive(k) for k in kids)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 30
        while any(_alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [k for k in kids if _alive(k)], "a process outlived serve"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_connections_spread_over_the_processes_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    port = _free_port()
    env = _environment(tmp_path, embedded_worker=False)
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--workers", "2"], env=env)
    clients: list[httpx.Client] = []
    try:
        _wait_for(port)
        web = [k for k in _children(proc.pid) if "resource_tracker" not in _cmdline(k)]
        assert len(web) == 2
        # 48 kept-alive connections opened at once: each process holds a fair share (one
        # shared socket gave one process nearly all of a burst).
        for _ in range(48):
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
            assert client.get("/healthz").status_code == 200
            clients.append(client)
        held = [_connections_held(pid, port) for pid in web]
        assert sum(held) == 48 and min(held) >= 8, held

        # A web process killed outright is replaced on its socket; the port keeps answering.
        os.kill(web[0], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while True:
            now = [k for k in _children(proc.pid) if "resource_tracker" not in _cmdline(k)]
            if len(now) == 2 and web[0] not in now:
                break
            assert time.monotonic() < deadline, "the dead web process was not replaced"
            time.sleep(0.3)
        replacement = next(k for k in now if k != web[1])
        fresh = []
        for _ in range(48):  # new connections reach the replacement too
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
            assert client.get("/healthz").status_code == 200
            fresh.append(client)
        clients += fresh
        assert _connections_held(replacement, port) >= 8

        # A second server on the same port is refused, in words, and the first one goes on.
        second = subprocess.run(
            [*CLI, "serve", "--port", str(port), "--workers", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1
        assert f"Cannot listen on 127.0.0.1:{port}" in second.stderr
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not [k for k in (*now, web[0]) if _alive(k)]
    finally:
        for client in clients:
            client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
