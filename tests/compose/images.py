"""Local stand-ins for the public base images, for a machine that reaches package
registries (PyPI, Debian) but no image registry. `python -m tests.compose.images` makes them;
the compose test does it itself. Each is made once and reused (delete it to remake it).

- PYTHON (for python:3.11-slim, the API's base): Debian bookworm's minbase with python3,
  made by debootstrap and `docker import`; `python` and `pip` on PATH (a venv in /opt/python,
  as Debian's own Python takes no pip installs), and this machine's CA bundle, the one the
  builds need to reach PyPI from here (images users build on public bases keep their own).
- PYTORCH (for pytorch/pytorch, the worker's base): PYTHON with torch and torchvision,
  installed from the wheels this machine's pip provides (`pip download`, a few GB), mounted
  read-only into a container and committed: no build context carries them.
The Redis and PostgreSQL stand-ins build on PYTHON from tests/compose/local-images.yml.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYTHON = "dcl-compose-test/python:3.11-bookworm"
# What this machine's pip offers for Python 3.11 on x86_64 (PyPI's build, with CUDA libraries:
# PyPI's torchvision does not import beside a CPU-only torch). Within pyproject.toml's ranges.
TORCH_PINS = ("torch==2.14.1", "torchvision==0.29.1")
PYTORCH = "dcl-compose-test/pytorch:2.14.1-bookworm"

CA_BUNDLE = Path(os.environ.get("DCL_COMPOSE_TEST_CA", "/etc/ssl/certs/ca-certificates.crt"))
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Wheels bookworm (glibc 2.36, x86_64) can load: pip takes no older manylinux tag than it is told.
PLATFORMS = [arg for glibc in range(36, 16, -1) for arg in ("--platform", f"manylinux_2_{glibc}_x86_64")]
PLATFORMS += ["--platform", "manylinux2014_x86_64", "--platform", "manylinux2010_x86_64", "--platform", "manylinux1_x86_64"]
PATH_IN_IMAGE = "/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run(*cmd: str, **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kwargs)


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def make_python_image() -> None:
    if image_exists(PYTHON):
        return
    if not shutil.which("debootstrap"):
        raise RuntimeError("debootstrap is missing: `apt-get install debootstrap` (or use public images)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dcl-compose-rootfs-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "root"
        run("debootstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm", str(root),
            DEBIAN_MIRROR, stdout=subprocess.DEVNULL)
        run("chroot", str(root), "python3", "-m", "venv", "/opt/python")
        (root / "etc/ssl/certs").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (root / cache).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        run("docker", "import",
            "--change", f"ENV PATH={PATH_IN_IMAGE}",
            "--change", "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
            "--change", "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            "--change", 'CMD ["python3"]',
            "-", PYTHON, stdin=tar.stdout, stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            raise RuntimeError("tar of the root file system failed")
    print(f"{PYTHON}: {time.monotonic() - started:.0f} s", flush=True)


def make_pytorch_image() -> None:
    if image_exists(PYTORCH):
        return
    make_python_image()
    started = time.monotonic()
    container = f"dcl-compose-test-torch-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="dcl-compose-wheels-", dir="/var/tmp") as wheels:
        # The host's pip finds the wheels (its own index and cache settings), for the image's Python.
        run(sys.executable, "-m", "pip", "download", "--quiet", "--dest", wheels, "--only-binary=:all:",
            "--python-version", "3.11", *PLATFORMS, *TORCH_PINS)
        try:
            run("docker", "run", "--name", container, "--network", "none", "-v", f"{wheels}:/wheels:ro",
                PYTHON, "pip", "install", "--no-cache-dir", "--no-index", "--find-links", "/wheels", *TORCH_PINS)
            run("docker", "commit", container, PYTORCH, stdout=subprocess.DEVNULL)
        finally:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    print(f"{PYTORCH}: {time.monotonic() - started:.0f} s", flush=True)


def make_base_images() -> None:
    make_python_image()
    make_pytorch_image()


if __name__ == "__main__":
    make_base_images()
