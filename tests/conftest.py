"""Shared test set-up. Process fixtures (redis-server, uvicorn, celery worker) live in tests/fixtures/."""

import pytest

pytest_plugins = ["tests.fixtures.servers", "tests.fixtures.workers"]


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # Two cores here: keep torch from oversubscribing them when processes run side by side.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(2)
