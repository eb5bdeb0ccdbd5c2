"""The worker's Celery app and its command line: the settings a long GPU job needs, and
`--gpu N` pinning the device before torch can be imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service.control.queue import RUN_JOB
from tests.fixtures.servers import REPO_ROOT, dcl_env


def test_the_app_is_configured_for_long_gpu_jobs():
    from worker.app import app

    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_max_tasks_per_child == 1
    assert conf.worker_pool == "prefork"
    assert conf.task_serializer == "json" and list(conf.accept_content) == ["json"]
    assert conf.task_ignore_result is True


def test_the_task_is_registered_under_the_shared_name():
    from worker.app import app
    from worker.tasks import run_job

    assert run_job.name == RUN_JOB
    assert app.tasks[RUN_JOB].name == RUN_JOB  # the worker app knows it by that name


def test_importing_the_task_module_does_not_import_torch(tmp_path):
    code = "import sys, worker.tasks, worker.cli, worker.reconciler; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=dcl_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_gpu_flag_pins_the_device_before_the_worker_starts(tmp_path):
    """`--gpu 3` sets CUDA_VISIBLE_DEVICES before anything imports torch; the engine is
    preloaded without initialising CUDA in the main process; the Celery worker is started
    with one prefork child per job on both queues."""
    code = (
        "import os, sys, json\n"
        "import worker.app\n"
        "seen = {}\n"
        "def fake_main(argv):\n"
        "    seen['argv'] = argv\n"
        "    seen['cuda'] = os.environ.get('CUDA_VISIBLE_DEVICES')\n"
        "    seen['torch_cuda'] = __import__('torch').cuda.is_initialized()\n"
        "worker.app.app.worker_main = fake_main\n"
        "from worker.cli import main\n"
        "assert main(['--gpu', '3', '--no-reconcile']) == 0\n"
        "print(json.dumps(seen))\n"
    )
    env = dcl_env(tmp_path)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["cuda"] == "3"
    assert seen["torch_cuda"] is False
    argv = seen["argv"]
    assert argv[0] == "worker"
    assert "--queues=gpu,cpu" in argv and "--concurrency=1" in argv
    assert "--pool=prefork" in argv and "--max-tasks-per-child=1" in argv
    assert any(a.startswith("--hostname=dcl-gpu3-") for a in argv)


def test_dcl_worker_is_a_dcl_command():
    out = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "dcl"), "worker", "--help"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0 and "invalid choice" in out.stderr:
        raise AssertionError("the dcl.commands entry point is not installed: pip install -e .")
    assert out.returncode == 0, out.stderr
    assert "--gpu" in out.stdout and "--queues" in out.stdout


def test_a_worker_points_the_compile_cache_at_its_volume(tmp_path, monkeypatch):
    from service.control.settings import Settings
    from worker.cli import use_compile_cache

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    settings = Settings(data_dir=tmp_path)
    assert settings.compile_cache_dir == tmp_path / "compile-cache"
    use_compile_cache(settings)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "compile-cache")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")  # an operator's own choice wins
    use_compile_cache(settings)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/elsewhere"
