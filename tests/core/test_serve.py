"""`civicgrid serve --workers N`: N web processes answering on one port, the background worker
once in a process of its own, and Ctrl-C stopping every one of them."""

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


def test_several_web_processes_one_worker_and_all_stop_on_ctrl_c(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "CIVICGRID_DATA_DIR": str(tmp_path / "data"),
        "CIVICGRID_EMBEDDED_WORKER": "true",
        "CIVICGRID_LOG_LEVEL": "WARNING",
    }
    env.pop("CIVICGRID_DATABASE_URL", None)  # SQLite in the data dir
    subprocess.run([*CLI, "db", "upgrade"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--workers", "2"], env=env)
    try:
        deadline = time.monotonic() + 120  # three interpreters start on a busy 2-core machine
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve --workers 2 did not answer"
            time.sleep(0.3)
        # The supervisor's children: the worker and uvicorn's two web processes (beside them,
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
