"""Encoder names at submit time: the API (no torch, no timm) checks them against the registry."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

TINY = {"epochs": 1, "batch_size": 8, "dataset": "builtin:digits"}


def submit(client, **config):
    return client.post("/v1/jobs", json={"type": "pretrain", "config": {**TINY, **config}})


def test_unknown_encoder_is_422_with_close_matches(alice):
    r = submit(alice, encoder="resnet19")
    assert r.status_code == 422, r.text
    error = r.json()["errors"][0]
    assert error["field"] == "config.encoder"
    assert "did you mean 'resnet18'" in r.json()["detail"] and "timm:NAME" in r.json()["detail"]


def test_timm_encoder_with_kwargs_and_exports_is_accepted(alice):
    r = submit(alice, encoder="timm:vit_tiny_patch16_224", encoder_kwargs={"depth": 2}, optimizer="adamw",
               warmup_epochs=0.5, export=["onnx", "hf"])
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["config"]["encoder_kwargs"] == {"depth": 2}


def test_kwargs_for_a_torchvision_encoder_are_422(alice):
    r = submit(alice, encoder="resnet18", encoder_kwargs={"depth": 2})
    assert r.status_code == 422 and "takes no encoder_kwargs" in r.json()["detail"]
