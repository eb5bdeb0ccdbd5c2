"""The layers (ARCHITECTURE.md), checked: dcl_core imports and names nothing above it; the
control plane imports no web framework, API or torch; the worker never imports the API (a
worker process has no fastapi in it); the API imports no torch, worker or training code, and
starts and takes jobs in a process where torch cannot be imported at all."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.servers import REPO_ROOT, dcl_env, run_api_server
from tests.service.conftest import image_zip

WEB_QUEUE_DB = {"fastapi", "starlette", "celery", "kombu", "redis", "sqlalchemy", "uvicorn", "alembic"}

ALLOWED_DCL_CORE = {
    "dcl_core", "dcl_core.config", "dcl_core.errors", "dcl_core.files", "dcl_core.cli", "dcl_core.lazy",
    "dcl_core.field_hints",
    "dcl_core.tracking",
    "dcl_core.jobs", "dcl_core.jobs.base", "dcl_core.jobs.pretrain", "dcl_core.jobs.linear_probe",
    "dcl_core.jobs.embed", "dcl_core.jobs.sweep",
    "dcl_core.data", "dcl_core.data.archive", "dcl_core.data.catalog", "dcl_core.data.decode",
    "dcl_core.data.inspection", "dcl_core.data.npz", "dcl_core.data.npz_rows", "dcl_core.data.stored",
    "dcl_core.data.tree",
    "dcl_core.models", "dcl_core.models.encoders", "dcl_core.models.timm_kwargs",
    "dcl_core.training", "dcl_core.training.methods",
    "dcl_core.experiments", "dcl_core.experiments.sweep",
    "dcl_core.evaluation", "dcl_core.evaluation.index",
}
"""dcl_core modules that import neither torch nor torchvision (the service may use these)."""

FORBIDDEN_ROOTS = {"torch", "torchvision", "worker"}


def module_path(module: str) -> Path:
    """The file that defines a module of this repository: `a/b.py`, or `a/b/__init__.py` for a package."""
    path = REPO_ROOT / module.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_modules(path: Path, top_level_only: bool = False) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (function-level imports count too), or
    only those its import runs (`top_level_only`)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module.split(".")[0] == "dcl_core":  # `from dcl_core.data import archive`: a module too
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names
                          if module_path(f"{node.module}.{alias.name}").exists()]
    return found


def test_no_service_module_imports_torch_the_worker_or_training_code():
    files = sorted((REPO_ROOT / "service").rglob("*.py"))
    assert files
    bad = []
    for path in files:
        for line, module in imported_modules(path):
            root = module.split(".")[0]
            if root in FORBIDDEN_ROOTS or (root == "dcl_core" and module not in ALLOWED_DCL_CORE):
                bad.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {module}")
    assert bad == []


def test_importing_the_light_dcl_core_modules_does_not_import_torch():
    for module in ALLOWED_DCL_CORE:
        path = module_path(module)
        roots = {m.split(".")[0] for _, m in imported_modules(path, top_level_only=True)}
        assert not roots & {"torch", "torchvision"}, module


@pytest.mark.integration
def test_api_starts_and_takes_jobs_with_torch_unimportable(tmp_path):
    shim = tmp_path / "no_torch"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import sys\nfor name in ('torch', 'torchvision'):\n    sys.modules[name] = None\n"
    )
    pythonpath = f"{shim}:{REPO_ROOT}"
    check = subprocess.run([sys.executable, "-c", "import torch"], env=dcl_env(tmp_path, PYTHONPATH=pythonpath),
                           capture_output=True, text=True)
    assert check.returncode != 0 and "ModuleNotFoundError" in check.stderr  # the shim works

    with run_api_server(tmp_path / "data", env={"PYTHONPATH": pythonpath}) as server, server.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        r = c.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1, "encoder": "convnet_small"}})
        assert r.status_code == 202, r.text
        with open(image_zip(tmp_path / "pets.zip"), "rb") as f:
            r = c.post("/v1/datasets", files={"file": ("pets.zip", f)})
        assert r.status_code == 201, r.text
        assert c.get("/readyz").status_code == 200
    assert "Traceback" not in server.output()


TORCH_FREE_DCL_CORE = ALLOWED_DCL_CORE | {"dcl_core.hooks", "dcl_core.data.decode_cache", "dcl_core.evaluation",
                                          "dcl_core.export", "dcl_core.experiments.sweep_plot"}
"""dcl_core modules whose import does not import torch (at any depth)."""


def test_importing_the_torch_free_modules_imports_no_torch_at_any_depth():
    code = (f"import sys, importlib; [importlib.import_module(m) for m in {sorted(TORCH_FREE_DCL_CORE)!r}]; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_dcl_core_imports_and_names_nothing_above_it():
    """No import of the service, the worker or web/queue/database libraries, and no module of the
    service or the worker named in a string (a registry entry, a lazy import)."""
    bad = []
    for path in sorted((REPO_ROOT / "dcl_core").rglob("*.py")):
        for line, module in imported_modules(path):
            if module.split(".")[0] in WEB_QUEUE_DB | {"service", "worker"}:
                bad.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {module}")
        for number, text in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\b(service|worker)\.[a-z_]+", text):
                bad.append(f"{path.relative_to(REPO_ROOT)}:{number} names {text.strip()[:80]}")
    assert bad == []


def test_the_control_plane_imports_no_web_framework_api_or_torch():
    bad = []
    for path in sorted((REPO_ROOT / "service" / "control").rglob("*.py")):
        for line, module in imported_modules(path):
            parts = module.split(".")
            if parts[0] in {"fastapi", "starlette", "uvicorn", "torch", "torchvision", "worker"} \
                    or parts[:2] == ["service", "api"]:
                bad.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {module}")
    assert bad == []


def test_the_worker_never_imports_the_api():
    bad = [f"{path.relative_to(REPO_ROOT)}:{line} imports {module}"
           for path in sorted((REPO_ROOT / "worker").rglob("*.py"))
           for line, module in imported_modules(path)
           if module.split(".")[:2] == ["service", "api"] or module.split(".")[0] in {"fastapi", "starlette"}]
    assert bad == []


def test_a_worker_process_has_no_fastapi_in_it(tmp_path):
    """Everything a worker's main process and a job's process import: no web framework."""
    code = ("import sys, worker.cli, worker.app, worker.tasks, worker.reconciler, worker.distributed\n"
            "from worker.runners import preload; preload()\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'starlette', 'uvicorn'}))")
    done = subprocess.run([sys.executable, "-c", code], env=dcl_env(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"

