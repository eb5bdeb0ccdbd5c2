"""The 2-D map: PCA against numpy's SVD, UMAP when installed (PCA with a warning when asked for and
missing), a seeded sample above the cap, and the TensorBoard projector files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dcl_core.evaluation import maps


def test_pca_is_the_top_two_principal_axes():
    x = torch.randn(300, 6) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    points = maps.pca_2d(x)
    centred = x.double().numpy() - x.double().numpy().mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:2].T
    np.testing.assert_allclose(np.abs(points), np.abs(expected), rtol=1e-4, atol=1e-4)  # axes up to sign


def test_a_sample_above_the_cap_and_the_method_used(monkeypatch):
    x = torch.randn(500, 8)
    points, items, facts = maps.project_2d(x, "pca", seed=3, max_points=100)
    assert points.shape == (100, 2) and len(set(items.tolist())) == 100 and facts["sampled"]
    again = maps.project_2d(x, "pca", seed=3, max_points=100)
    np.testing.assert_array_equal(items, again[1])
    np.testing.assert_allclose(points, maps.pca_2d(F.normalize(x[torch.as_tensor(items)], dim=1)), atol=1e-5)
    monkeypatch.setattr(maps, "umap_available", lambda: False)
    _, _, facts = maps.project_2d(x, "umap")
    assert facts["method"] == "pca" and "umap-learn" in facts["warning"]
    assert maps.project_2d(x, "auto")[2]["method"] == "pca"


def test_umap_when_installed():
    pytest.importorskip("umap")
    _, _, facts = maps.project_2d(torch.randn(200, 8), "umap")
    assert facts["method"] == "umap"


def test_projector_files(tmp_path):
    features = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    images = torch.randint(0, 255, (30, 3, 8, 8), dtype=torch.uint8)
    written = maps.write_projector(tmp_path, features, np.arange(30), np.arange(30) % 3, ["a", "b", "c"], images)
    assert written == {"points": 30, "sprite_px": 8}
    rows = np.loadtxt(tmp_path / "tensors.tsv", delimiter="\t")
    np.testing.assert_allclose(rows, features, rtol=1e-4)
    assert (tmp_path / "metadata.tsv").read_text().splitlines()[:3] == ["item\tlabel", "0\ta", "1\tb"]
    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert 'tensor_path: "tensors.tsv"' in config and "single_image_dim: 8" in config
    from PIL import Image

    with Image.open(tmp_path / "sprite.png") as sprite:
        assert sprite.size == (6 * 8, 5 * 8)  # ceil(sqrt(30)) = 6 a row
