"""`load_encoder(...).transform` takes the images people have: numpy channels-last arrays (one
image or a batch, grey or RGB), PIL images and lists of them, as well as tensors; anything else
is refused with a message that says what it takes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dcl_core.export.encoder import load_encoder, save_encoder
from tests.dcl_core.export.test_export import make_meta, trained_like


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    save_encoder(trained_like("convnet_small", False), run, make_meta("convnet_small", False))
    return load_encoder(run)


def test_numpy_pil_and_lists_give_the_tensor_path_features(encoder):
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (4, 20, 20, 3), dtype=np.uint8)
    as_tensor = torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        expected = encoder(encoder.transform(as_tensor))
        assert torch.allclose(encoder(encoder.transform(hwc)), expected, atol=1e-5)
        assert torch.allclose(encoder(encoder.transform(list(hwc))), expected, atol=1e-5)
        assert torch.allclose(encoder(encoder.transform([Image.fromarray(x) for x in hwc])), expected, atol=1e-5)
        one = encoder(encoder.transform(hwc[0]))
        assert one.shape == (1, 256) and torch.allclose(one, expected[:1], atol=1e-5)
        grey = encoder(encoder.transform(hwc[0, :, :, 0]))
        assert torch.allclose(grey, encoder(encoder.transform(np.repeat(hwc[:1, :, :, :1], 3, axis=-1))), atol=1e-5)


@pytest.mark.parametrize("bad, words", [
    (np.zeros((3, 20, 20), np.uint8), "channels-first"),
    (np.zeros((2, 20, 20, 4), np.uint8), "channels-last"),
    (np.zeros((20, 20, 3), np.int64), "uint8"),
    ("picture.png", "give uint8 images as"),
    ([np.zeros((20, 20, 3), np.uint8), np.zeros((24, 24, 3), np.uint8)], "different sizes"),
])
def test_other_input_is_refused_with_what_it_takes(encoder, bad, words):
    with pytest.raises((TypeError, ValueError), match=words):
        encoder.transform(bad)
