"""Start `pilotlight` commands as real processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The checkout these tests belong to: its `app` is the one the processes run, not the one
# an editable install may point at (another worktree sharing the virtualenv).
ROOT = Path(__file__).resolve().parents[2]


def pilotlight_env(*, data_dir: Path, database_url: str = "", **extra: str) -> dict[str, str]:
    """The environment of a fresh machine: no PILOTLIGHT_ settings but the ones given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTLIGHT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(
        PILOTLIGHT_DATA_DIR=str(data_dir), PILOTLIGHT_DATABASE_URL=database_url,
        PILOTLIGHT_TIMEZONE="Europe/Berlin", PILOTLIGHT_LOG_LEVEL="INFO", **extra,
    )
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "app", *args]


def start(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes], timeout: float = 15, log: Path | None = None) -> int:
    """SIGTERM, and the exit code. One still running after `timeout` is killed (so it
    holds nothing for the tests after), and the test fails, with the end of its log."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        if log is None:
            raise
        raise AssertionError(f"still running {timeout}s after SIGTERM; killed. The end of "
                             f"its log:\n{log.read_text()[-20_000:]}") from None


def stopped_cleanly(code: int, log: Path) -> bool:
    """Exit 0 and no traceback: every role, the api's too (uvicorn would end by SIGTERM)."""
    return code == 0 and "Traceback" not in log.read_text()


def wait_logged(log: Path, text: str, timeout: float = 90) -> None:
    """Wait until a process has written `text` to its log (e.g. that it started). Seven
    processes importing the app at once on two busy cores can take half a minute."""
    wait_for(lambda: text in log.read_text(), timeout, f"'{text}' in {log.name}")


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_healthy(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"process exited {process.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 30, f"{base}/healthz")
