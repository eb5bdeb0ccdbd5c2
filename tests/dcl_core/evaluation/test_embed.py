"""run_embed: features of every image as a float32 .npy, labels beside it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcl_core.config import EmbedConfig
from dcl_core.data.sources import DataEnv
from dcl_core.evaluation.features import extract_features
from dcl_core.export.encoder import load_encoder, save_encoder
from dcl_core.hooks import NullHooks, StopRequested
from dcl_core.models.encoders import build_encoder


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    torch.manual_seed(0)
    run_dir = tmp_path_factory.mktemp("encoder")
    save_encoder(build_encoder("convnet_small", True).eval(), run_dir, {
        "encoder": "convnet_small", "small_stem": True, "image_size": 16,
        "mean": (0.3, 0.3, 0.3), "std": (0.4, 0.4, 0.4), "config": {}, "metrics": {},
    })
    return run_dir


class CountingHooks(NullHooks):
    def __init__(self):
        self.steps = []

    def on_step(self, step, metrics):
        self.steps.append((step, metrics))


def test_run_embed_on_builtin_digits(encoder_dir, tmp_path):
    from dcl_core.evaluation.embed import run_embed

    out = tmp_path / "out" / "feats.npy"
    config = EmbedConfig(data={"source": "builtin:digits", "split": "test"}, device="cpu", batch_size=100)
    hooks = CountingHooks()
    assert run_embed(encoder_dir, config, out, DataEnv(), hooks=hooks) == out

    feats = np.load(out, allow_pickle=False)
    labels = np.load(tmp_path / "out" / "feats_labels.npy", allow_pickle=False)
    assert feats.shape == (360, 256) and feats.dtype == np.float32
    assert labels.shape == (360,) and labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))
    assert sorted(p.name for p in out.parent.iterdir()) == ["feats.npy", "feats_labels.npy"]  # no temp files
    assert hooks.steps and hooks.steps[-1][1]["num_images"] == 360

    # The same features as extracting them by hand at the encoder's input size (16 px).
    from dcl_core.data.sources import load_images

    encoder = load_encoder(encoder_dir)
    images = load_images(config.data.model_copy(update={"image_size": 16}), DataEnv())
    expected = extract_features(encoder, images.images, encoder.transform, device="cpu")
    np.testing.assert_allclose(feats, expected.numpy(), atol=1e-5)
    np.testing.assert_array_equal(labels, images.labels.numpy())


def test_run_embed_unlabelled_data_writes_no_labels_file(encoder_dir, tmp_path):
    from dcl_core.evaluation.embed import run_embed

    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(0).integers(0, 256, (12, 10, 10, 3), dtype=np.uint8))
    out = tmp_path / "emb.npy"
    stale = tmp_path / "emb_labels.npy"
    np.save(stale, np.zeros(3, dtype=np.int64))  # from an earlier, labelled run
    run_embed(encoder_dir, EmbedConfig(data=str(data), device="cpu"), out, DataEnv())
    assert np.load(out).shape == (12, 256)
    assert not stale.exists()


def test_run_embed_stops_between_batches_and_writes_nothing(encoder_dir, tmp_path):
    # Issue 9, item 11: embed never polled should_stop.
    from dcl_core.evaluation.embed import run_embed

    class StopOnThirdPoll(NullHooks):
        polls = 0

        def should_stop(self):
            self.polls += 1
            return self.polls >= 3

    out = tmp_path / "out" / "feats.npy"
    config = EmbedConfig(data={"source": "builtin:digits", "split": "test"}, device="cpu", batch_size=100)
    hooks = StopOnThirdPoll()
    with pytest.raises(StopRequested):
        run_embed(encoder_dir, config, out, DataEnv(), hooks=hooks)
    assert hooks.polls == 3 and not out.exists() and not out.with_name("feats_labels.npy").exists()
