"""A timm ViT pretrain job through the service, asking for ONNX and the Hugging Face folder:
real uvicorn, a real worker process, the embedded broker and a SQLite store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.integration.helpers import image_zip, service_stack, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(300)]
pytest.importorskip("timm")
onnxruntime = pytest.importorskip("onnxruntime")


def test_vit_job_exports_onnx_and_hf_and_warns_about_sgd(tmp_path):
    with service_stack("sqlite", tmp_path / "stack") as stack, stack.client() as client:
        dataset = client.post("/v1/datasets", files={"file": ("shapes.zip", image_zip(), "application/zip")}).json()
        config = {
            "encoder": "timm:vit_tiny_patch16_224",
            "encoder_kwargs": {"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2},
            "dataset": {"source": dataset["source"], "image_size": 16}, "batch_size": 16, "epochs": 1,
            "projection_hidden_dim": 32, "projection_dim": 16, "optimizer": "sgd", "device": "cpu",
            "export": ["onnx", "hf"],
        }
        r = client.post("/v1/jobs", json={"type": "pretrain", "config": config})
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["id"], timeout_s=240)
        assert job["status"] == "succeeded", (job.get("error"), stack.logs())
        assert any("vision transformer" in w and "'sgd'" in w for w in job["result"]["warnings"])

        names = {a["name"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()["items"]}
        assert {"encoder.onnx", "config.json", "model.safetensors"} <= names
        for name in ("encoder.onnx", "config.json", "model.safetensors"):
            (tmp_path / name).write_bytes(client.get(f"/v1/jobs/{job['id']}/artifacts/{name}").content)

    import torch

    from dcl_core.export.encoder import load_encoder

    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["timm_model"] == "vit_tiny_patch16_224" and meta["onnx"]["max_abs_diff"] < 1e-4
    encoder = load_encoder(tmp_path)  # the Hugging Face-style folder
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    session = onnxruntime.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = encoder(images).numpy()
    np.testing.assert_allclose(session.run(["features"], {"images": images.numpy()})[0], expected, atol=1e-4)
