"""One docker compose deployment of dcl-service, driven through the Compose CLI.

The user's docker-compose.yml is the file under test. The test adds tests/compose/fast-leases.yml
(short leases) and, unless DCL_COMPOSE_TEST_IMAGES=public, tests/compose/local-images.yml
(images built on local stand-ins, for a machine without an image registry).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
LOCAL_IMAGES = os.environ.get("DCL_COMPOSE_TEST_IMAGES", "local") != "public"
FILES = [ROOT / "docker-compose.yml", HERE / "fast-leases.yml"] + ([HERE / "local-images.yml"] if LOCAL_IMAGES else [])
# No GPU here: the CPU worker, and none of the GPU one (as docker-compose.yml's header says).
PROFILE = ("--profile", "cpu")
UP = ("up", "-d", "--wait", "--scale", "worker=0")
APP_SERVICES = ("api", "worker-cpu")


@dataclass
class Deployment:
    compose: list[str]  # the Compose CLI
    project: str
    port: int
    api_key: str = field(default_factory=lambda: "key-" + secrets.token_hex(8))
    postgres_password: str = field(default_factory=lambda: secrets.token_hex(12))
    log: Path = Path("/dev/null")

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment: only what the compose file reads, and PATH/HOME."""
        base = {k: os.environ[k] for k in ("PATH", "HOME", "DOCKER_HOST") if k in os.environ}
        return {**base, "DCL_API_KEYS": self.api_key, "POSTGRES_PASSWORD": self.postgres_password,
                "API_BIND": "127.0.0.1", "API_PORT": str(self.port), **extra}

    def run(self, *args: str, timeout_s: float = 600, check: bool = True, env: dict | None = None
            ) -> subprocess.CompletedProcess:
        files = [a for f in FILES for a in ("-f", str(f))]
        cmd = [*self.compose, "--project-directory", str(ROOT), "-p", self.project, *files, *PROFILE, *args]
        started = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT,
                             env=self.env() if env is None else env)
        with open(self.log, "a") as log:
            log.write(f"$ {' '.join(args)}  ({time.monotonic() - started:.1f} s, exit {out.returncode})\n"
                      f"{out.stdout}{out.stderr}\n")
        if check and out.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)} exited {out.returncode}:\n"
                                 f"{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
        return out

    def up(self) -> None:
        self.run(*UP, timeout_s=300)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60,
                            headers={"Authorization": f"Bearer {self.api_key}"})

    def container(self, service: str) -> str:
        out = self.run("ps", "-q", service).stdout.split()
        assert len(out) == 1, f"{service}: containers {out}"
        return out[0]

    def exec(self, service: str, *cmd: str) -> str:
        return self.run("exec", "-T", service, *cmd).stdout

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks still labelled with this project."""
        label = f"label=com.docker.compose.project={self.project}"
        found = {}
        for kind, listing in (("containers", ["ps", "-a"]), ("volumes", ["volume", "ls"]), ("networks", ["network", "ls"])):
            out = subprocess.run(["docker", *listing, "-q", "--filter", label], capture_output=True, text=True,
                                 check=True)
            found[kind] = out.stdout.split()
        return found

    def logs(self) -> str:
        out = self.run("logs", "--no-color", "--tail", "200", check=False, timeout_s=60)
        return out.stdout[-20000:] + out.stderr[-2000:]

    def images(self) -> dict[str, str]:
        """service -> image name, as compose resolves them."""
        config = json.loads(self.run("config", "--format", "json").stdout)
        return {name: s["image"] for name, s in config["services"].items()}
