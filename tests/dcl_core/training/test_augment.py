"""dcl_core.training.augment, image_ops and views: batched SimCLR views (CPU, tiny images)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image

from dcl_core.config import AugmentConfig
from dcl_core.training.augment import AugmentParams, SimCLRAugment
from dcl_core.training.image_ops import (
    EvalTransform,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    gaussian_blur,
    rgb_to_grayscale,
)
from dcl_core.training.views import save_png, views_grid

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
IDENTITY = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
OFF = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)


def images(batch: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8)


def normalise(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def denormalise(y: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    return y * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)


def augment(size: int = 16, mean=MEAN, std=STD, **config) -> SimCLRAugment:
    return SimCLRAugment(AugmentConfig(**config), size, mean, std)


def binomial_ok(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def asymmetric(batch: int, size: int = 8) -> torch.Tensor:
    """`batch` copies of one colourful image that differs from its mirror image."""
    one = images(1, size, seed=3)
    one[0, :, :, 0] = torch.tensor([250, 10, 40], dtype=torch.uint8).view(3, 1)  # a left edge
    return one.expand(batch, -1, -1, -1).contiguous()


# ---------------------------------------------------------------------------- basics


def test_output_shape_dtype_device_finite():
    out = augment(12)(images(4, 16))
    assert out.shape == (4, 3, 12, 12)
    assert out.dtype == torch.float32
    assert out.device.type == "cpu"
    assert torch.isfinite(out).all()


def test_non_square_input_and_upscaling():
    x = torch.randint(0, 256, (3, 3, 10, 14), dtype=torch.uint8)
    out = augment(20)(x)
    assert out.shape == (3, 3, 20, 20) and torch.isfinite(out).all()


def test_two_calls_give_different_views():
    aug, x = augment(), images()
    assert not torch.allclose(aug(x), aug(x))


def test_same_seed_same_views_and_different_seed_differs():
    aug, x = augment(), images()
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_every_image_draws_its_own_view():
    x = asymmetric(64)
    out = augment(8)(x, torch.Generator().manual_seed(0))
    flat = out.flatten(1)
    distance = (flat[:, None] - flat[None]).abs().amax(dim=2)
    assert (distance + torch.eye(64) > 1e-3).all()  # every pair of views differs


def test_chunking_on_the_cpu_changes_nothing():
    x = images(23, 16)
    params = augment().sample_params(23, 16, 16, generator=torch.Generator().manual_seed(1))
    whole = SimCLRAugment(AugmentConfig(blur_p=0.5), 16, MEAN, STD, cpu_chunk=0).apply(x, params)
    for chunk in (1, 5, None):
        chunked = SimCLRAugment(AugmentConfig(blur_p=0.5), 16, MEAN, STD, cpu_chunk=chunk).apply(x, params)
        torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)


def test_float_input_matches_uint8():
    x = images()
    aug = augment()
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x.float() / 255, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(3, 16, 16), (2, 1, 16, 16), (2, 4, 16, 16)])
def test_bad_shapes_are_rejected(shape):
    with pytest.raises(ValueError):
        augment()(torch.zeros(shape, dtype=torch.uint8))


def test_generator_on_another_device_is_rejected():
    with pytest.raises(ValueError, match="generator"):
        augment().sample_params(2, 8, 8, device="meta", generator=torch.Generator())


def test_bad_mean_std_rejected():
    with pytest.raises(ValueError):
        SimCLRAugment(AugmentConfig(), 8, (0.5, 0.5), (0.2, 0.2, 0.2))
    with pytest.raises(ValueError):
        EvalTransform(8, MEAN, (0.2, 0.0, 0.2))


# ------------------------------------------------------------------- single operations


def test_all_randomness_off_is_plain_normalisation():
    x = images(5, 16)
    out = augment(16, **OFF)(x)
    torch.testing.assert_close(out, normalise(x.float() / 255), atol=1e-5, rtol=0)


def test_flip_only_is_torch_flip():
    x = images(5, 16)
    out = augment(16, **{**OFF, "hflip_p": 1.0})(x)
    torch.testing.assert_close(out, normalise(torch.flip(x, dims=[-1]).float() / 255), atol=1e-5, rtol=0)


def test_grayscale_only_gives_luma_in_every_channel():
    x = images(5, 16)
    out = denormalise(augment(16, **{**OFF, "grayscale_p": 1.0})(x))
    gray = rgb_to_grayscale(x.float() / 255)
    torch.testing.assert_close(out, gray.expand(-1, 3, -1, -1), atol=1e-5, rtol=0)


def test_crop_boxes_follow_the_config():
    aug = augment(16, crop_scale=(0.2, 0.6), crop_ratio=(0.5, 2.0))
    p = aug.sample_params(4000, 20, 30, generator=torch.Generator().manual_seed(0))
    x0, y0, w, h = p.box.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 1 + 1e-6).all() and (y0 + h <= 1 + 1e-6).all()
    area = w * h
    assert (area >= 0.2 - 1e-5).all() and (area <= 0.6 + 1e-5).all()
    ratio = (w * 30) / (h * 20)  # in pixels
    assert (ratio >= 0.5 - 1e-4).all() and (ratio <= 2.0 + 1e-4).all()
    assert ratio.log().std() > 0.3 and area.std() > 0.05  # spread, not constant


def test_fraction_flipped_follows_hflip_p():
    n, x = 2000, asymmetric(2000)
    out = augment(8, **{**OFF, "hflip_p": 0.5})(x, torch.Generator().manual_seed(0))
    plain = normalise(x.float() / 255)
    flipped = normalise(torch.flip(x, dims=[-1]).float() / 255)
    is_plain = ((out - plain).abs().amax(dim=(1, 2, 3)) < 1e-4)
    is_flipped = ((out - flipped).abs().amax(dim=(1, 2, 3)) < 1e-4)
    assert (is_plain ^ is_flipped).all()
    assert binomial_ok(int(is_flipped.sum()), n, 0.5)


def test_fraction_grayscale_follows_grayscale_p():
    n, x = 2000, asymmetric(2000)
    out = denormalise(augment(8, **{**OFF, "grayscale_p": 0.2})(x, torch.Generator().manual_seed(0)))
    gray = (out.amax(dim=1) - out.amin(dim=1)).amax(dim=(1, 2)) < 1e-5
    assert binomial_ok(int(gray.sum()), n, 0.2)


def test_fraction_jittered_follows_jitter_p():
    n, x = 2000, asymmetric(2000)
    out = augment(8, **{**OFF, "jitter_p": 0.8})(x, torch.Generator().manual_seed(0))
    unchanged = (out - normalise(x.float() / 255)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert binomial_ok(int(unchanged.sum()), n, 0.2)


def test_fraction_blurred_follows_blur_p():
    n, x = 2000, asymmetric(2000)
    out = augment(8, **{**OFF, "blur_p": 0.5, "blur_sigma": (1.0, 2.0)})(x, torch.Generator().manual_seed(0))
    unchanged = (out - normalise(x.float() / 255)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert binomial_ok(int(unchanged.sum()), n, 0.5)


def test_blur_probability_default_depends_on_size():
    assert augment(32)._blur_on is False
    assert augment(96)._blur_on is True and augment(96).kernel_size == blur_kernel_size(96) == 11
    assert blur_kernel_size(32) == 3 and blur_kernel_size(224) == 23 and blur_kernel_size(8) == 3


# --------------------------------------------------- colour ops against torchvision


FACTORS = {
    "brightness": (adjust_brightness, TF.adjust_brightness, [0.6, 1.0, 1.4, 0.0], 1e-6),
    # luma 0.299 (ITU-R 601-2, PIL) vs torchvision's 0.2989: a 1e-4 difference in the gray.
    "contrast": (adjust_contrast, TF.adjust_contrast, [0.6, 1.0, 1.4, 0.0], 2e-4),
    "saturation": (adjust_saturation, TF.adjust_saturation, [0.6, 1.0, 1.4, 0.0], 2e-4),
    "hue": (adjust_hue, TF.adjust_hue, [-0.1, 0.0, 0.1, 0.5, -0.5, 0.33], 1e-5),
}


def colourful(batch: int = 6, size: int = 12) -> torch.Tensor:
    x = images(batch, size, seed=5).float() / 255
    x[0] = x[0, :1]  # a gray image
    x[1] = x[1].round()  # saturated colours with ties between channels
    return x


@pytest.mark.parametrize("name", list(FACTORS))
def test_colour_op_matches_torchvision(name):
    ours, theirs, factors, tol = FACTORS[name]
    x = colourful(len(factors))
    per_sample = ours(x, torch.tensor(factors))
    expected = torch.stack([theirs(x[i], f) for i, f in enumerate(factors)])
    torch.testing.assert_close(per_sample, expected, atol=tol, rtol=0)
    for i, f in enumerate(factors):  # a Python float applies to every image
        torch.testing.assert_close(ours(x[i : i + 1], f), expected[i : i + 1], atol=tol, rtol=0)


def test_jitter_in_each_images_order_matches_sequential_torchvision():
    n = 48
    x = images(n, 10, seed=9)
    aug = augment(10, **IDENTITY, **{**OFF, "jitter_p": 1.0})
    g = torch.Generator().manual_seed(4)
    params = aug.sample_params(n, 10, 10, generator=g)
    orders = torch.stack([torch.randperm(4, generator=g) for _ in range(n)])  # all 24 orders occur
    jitter = torch.arange(n) % 8 != 0  # a few images without jitter
    params = AugmentParams(**{**params.__dict__, "order": orders, "jitter": jitter})
    out = aug.apply(x, params)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(n):
        expected = x[i].float() / 255
        if jitter[i]:
            for op in orders[i].tolist():
                expected = ops[op](expected, float(params.factors[i, op]))
        torch.testing.assert_close(out[i], expected, atol=1e-3, rtol=0, msg=f"image {i}, order {orders[i]}")
    assert len({tuple(o) for o in orders.tolist()}) > 12


def test_jitter_factors_follow_the_config():
    aug = augment(8, brightness=0.4, contrast=1.5, saturation=0.0, hue=0.1)
    f = aug.sample_params(5000, 8, 8, generator=torch.Generator().manual_seed(0)).factors
    assert f[:, 0].min() >= 0.6 and f[:, 0].max() <= 1.4 and f[:, 0].std() > 0.2
    assert f[:, 1].min() >= 0.0 and f[:, 1].max() <= 2.5
    assert (f[:, 2] == 1.0).all()
    assert f[:, 3].abs().max() <= 0.1 and f[:, 3].std() > 0.05


# ------------------------------------------------------------------------------ blur


def test_blur_matches_torchvision_and_tiny_sigma_is_identity():
    x = colourful(3, 12)
    torch.testing.assert_close(
        gaussian_blur(x, torch.tensor([0.5, 1.3, 2.0]), 5),
        torch.stack([TF.gaussian_blur(x[i], [5, 5], [s, s]) for i, s in enumerate([0.5, 1.3, 2.0])]),
        atol=1e-5, rtol=0,
    )
    torch.testing.assert_close(gaussian_blur(x, 1e-3, 5), x, atol=1e-6, rtol=0)
    apply = torch.tensor([True, False, True])
    out = gaussian_blur(x, 2.0, 5, apply=apply)
    assert torch.equal(out[1], x[1]) and not torch.allclose(out[0], x[0])


def test_blur_only_view_with_tiny_sigma_is_the_image():
    x = images(4, 16)
    out = augment(16, **{**OFF, "blur_p": 1.0, "blur_sigma": (1e-3, 1e-3)})(x)
    torch.testing.assert_close(out, normalise(x.float() / 255), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------ statistics


def test_default_views_stay_in_range_with_a_plausible_mean():
    x = torch.randint(0, 256, (512, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for size in (16, 96):  # 96: the default turns blur on
        out = denormalise(augment(size)(x, torch.Generator().manual_seed(1)))
        assert out.min() >= -1e-5 and out.max() <= 1 + 1e-5
        assert 0.35 < out.mean() < 0.65
        assert out.std() > 0.05


# ------------------------------------------------------------------- eval and grid


def test_eval_transform_resizes_deterministically():
    x = images(3, 20)
    t = EvalTransform(12, MEAN, STD)
    a, b = t(x), t(x)
    assert a.shape == (3, 3, 12, 12) and a.dtype == torch.float32
    assert torch.equal(a, b)
    expected = F.interpolate(x.float() / 255, size=(12, 12), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(a, normalise(expected), atol=1e-5, rtol=0)
    same = EvalTransform(20, MEAN, STD)(x)
    torch.testing.assert_close(same, normalise(x.float() / 255), atol=1e-6, rtol=0)


def test_views_grid_and_png(tmp_path):
    x = images(3, 10)
    aug = augment(8)
    grid = views_grid(x, aug, n_views=2, generator=torch.Generator().manual_seed(0), padding=2)
    assert grid.dtype == torch.uint8 and grid.shape == (3, 3 * 10 + 2, 3 * 10 + 2)
    # The first cell of each row is the original, resized.
    original = F.interpolate(x.float() / 255, size=(8, 8), mode="bilinear", antialias=True, align_corners=False)
    first = grid[:, 2:10, 2:10].float() / 255
    torch.testing.assert_close(first, original[0], atol=1 / 255 + 1e-6, rtol=0)
    path = save_png(grid, tmp_path / "views.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (32, 32)
        assert torch.equal(torch.from_numpy(np.array(image)).permute(2, 0, 1), grid)


def test_save_png_rejects_float(tmp_path):
    with pytest.raises(ValueError):
        save_png(torch.zeros(3, 4, 4), tmp_path / "x.png")


# ---------------------------------------------------------------------------- device


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_views_without_host_sync():
    x = images(64, 32).cuda()
    aug = augment(32, blur_p=0.5)
    g = torch.Generator(device="cuda").manual_seed(0)
    aug(x, g)  # warm-up (first-call allocations, kernels)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        a = aug(x, torch.Generator(device="cuda").manual_seed(1))
        b = aug(x, torch.Generator(device="cuda").manual_seed(1))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert a.device.type == "cuda" and a.shape == (64, 3, 32, 32)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="generator"):
        aug(x, torch.Generator())
    # The same parameters give the same views on the CPU.
    params = aug.sample_params(64, 32, 32, "cuda", torch.Generator(device="cuda").manual_seed(2))
    on_cpu = AugmentParams(**{k: v.cpu() for k, v in params.__dict__.items()})
    torch.testing.assert_close(aug.apply(x, params).cpu(), aug.apply(x.cpu(), on_cpu), atol=1e-4, rtol=0)
