"""Batched pixel operations on (B, 3, H, W) float images in [0, 1], pure torch: torchvision's
colour ops and Gaussian blur with a parameter per image, resizing and normalisation (the
building blocks of `augment`), and `EvalTransform`, the deterministic evaluation preprocessing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LUMA",
    "EvalTransform",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "rgb_to_grayscale",
    "gaussian_blur",
    "blur_kernel_size",
]

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L")


# ----------------------------------------------------------------------------- helpers


def constant(values: tuple[float, ...], like: Tensor) -> Tensor:
    """A small 1-D tensor on `like`'s device and dtype, filled on the device (no host copy)."""
    return torch.stack([like.new_full((), float(v)) for v in values])


class Constants:
    """Small constant tensors for one device and dtype, made once (device-side fills)."""

    def __init__(self, like: Tensor) -> None:
        self.eye = torch.eye(3, dtype=like.dtype, device=like.device)
        self.luma = constant(LUMA, like)
        self.luma_rows = self.luma.expand(3, 3).contiguous()  # luma_rows @ rgb = gray, 3 times
        self.hue_offsets = constant((0.0, 4.0, 2.0), like)  # R, G, B in sixths of a turn
        steps = torch.arange(6, device=like.device)
        # The jitter's six linear passes: order positions 0, 1, 2 (before each image's hue)
        # then 1, 2, 3 (after it).
        self.pass_position = torch.where(steps < 3, steps, steps - 2)
        self.pass_before_hue = steps < 3


_CONSTANTS: dict[tuple[str, torch.dtype], Constants] = {}


def constants(like: Tensor) -> Constants:
    key = (str(like.device), like.dtype)
    found = _CONSTANTS.get(key)
    if found is None:
        found = _CONSTANTS[key] = Constants(like)
    return found


def _per_sample(value: Tensor | float, x: Tensor) -> Tensor:
    """(B,) factors in x's dtype: a Python float is broadcast (device-side fill)."""
    if isinstance(value, Tensor):
        if value.dim() == 0:
            return value.to(x.dtype).expand(x.shape[0])
        if value.shape != (x.shape[0],):
            raise ValueError(f"per-sample factors must have shape ({x.shape[0]},), got {tuple(value.shape)}")
        return value.to(x.dtype)
    return x.new_full((x.shape[0],), float(value))


def check_images(images: Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if not (images.dtype == torch.uint8 or images.is_floating_point()):
        raise TypeError(f"expected uint8 (or float in [0, 1]) images, got {images.dtype}")


def to_float(images: Tensor) -> Tensor:
    """uint8 -> float32 in [0, 1]; floating images are taken as already in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).mul_(1.0 / 255.0)
    return images


def check_mean_std(mean, std) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    mean = tuple(float(v) for v in mean)
    std = tuple(float(v) for v in std)
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got {mean} and {std}")
    if min(std) <= 0:
        raise ValueError(f"std must be > 0 for every channel, got {std}")
    return mean, std  # type: ignore[return-value]


def _normalise(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    m = constant(mean, x).view(1, 3, 1, 1)
    s = constant(std, x).view(1, 3, 1, 1)
    return (x - m) / s


def resize(x: Tensor, size: int) -> Tensor:
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)


# ------------------------------------------------------------- pure per-sample colour ops


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """(B, 3, H, W) float -> (B, 1, H, W) luma (ITU-R 601-2)."""
    r, g, b = x.unbind(dim=1)
    return (r * LUMA[0] + g * LUMA[1] + b * LUMA[2]).unsqueeze(1)


def linear_pass(x: Tensor, matrix: Tensor, mean_mix: Tensor, consts: Constants) -> Tensor:
    """clamp(matrix @ rgb + mean_mix * mean(gray(x)), 0, 1) per image: one batched matmul.

    x: (B, 3, H, W) float; matrix: (B, 3, 3); mean_mix: (B,). With I the identity and G the
    matrix whose rows are the luma weights: brightness f is (f I, 0), contrast f is
    (f I, 1 - f), saturation f is (f I + (1 - f) G, 0), nothing is (I, 0).
    """
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    mean_gray = flat.mean(dim=2) @ consts.luma  # (B,): the mean of the grayscale image
    offset = (mean_mix * mean_gray).view(b, 1, 1).expand(b, c, 1)
    return torch.baddbmm(offset, matrix, flat).clamp_(0.0, 1.0).view(b, c, h, w)


def blend_matrices(scale: Tensor, gray_mix: Tensor, consts: Constants) -> Tensor:
    """scale * I + gray_mix * G, batched over the leading dims of scale/gray_mix."""
    return scale[..., None, None] * consts.eye + gray_mix[..., None, None] * consts.luma_rows


def adjust_brightness(x: Tensor, factor: Tensor | float) -> Tensor:
    """torchvision's adjust_brightness with a factor per image: clamp(f * x, 0, 1)."""
    f, c = _per_sample(factor, x), constants(x)
    zero = torch.zeros_like(f)
    return linear_pass(x, blend_matrices(f, zero, c), zero, c)


def adjust_contrast(x: Tensor, factor: Tensor | float) -> Tensor:
    """torchvision's adjust_contrast per image: blend with the mean of the grayscale image."""
    f, c = _per_sample(factor, x), constants(x)
    return linear_pass(x, blend_matrices(f, torch.zeros_like(f), c), 1.0 - f, c)


def adjust_saturation(x: Tensor, factor: Tensor | float) -> Tensor:
    """torchvision's adjust_saturation per image: blend with the grayscale image."""
    f, c = _per_sample(factor, x), constants(x)
    return linear_pass(x, blend_matrices(f, 1.0 - f, c), torch.zeros_like(f), c)


def adjust_hue(x: Tensor, shift: Tensor | float) -> Tensor:
    """torchvision's adjust_hue per image: shift the HSV hue by `shift` (a fraction of a turn).

    A closed form of RGB -> HSV -> shift -> RGB with no branches: with max M, min m and
    chroma C = M - m, the hue in sixths is h6 = 2 * k + (next - prev) / C where k is the max
    channel (0 R, 1 G, 2 B; ties give the same hue) and next/prev are the channels after and
    before it. The shifted hue gives each channel m + C * ramp(h6 + o) with o = 0, 4, 2 for
    R, G, B and ramp(t) = clamp(tri(t) - 1, 0, 1), tri the 6-periodic triangle wave
    |t mod 6 - 3| (here folded with abs). Value and saturation are kept, as in HSV.
    """
    offsets = constants(x).hue_offsets.view(1, 3) + 6.0 * _per_sample(shift, x).view(-1, 1)
    return shift_hue(x, offsets)


def shift_hue(x: Tensor, offsets: Tensor) -> Tensor:
    """adjust_hue with offsets (B, 3) = (0, 4, 2) + 6 * shift per image."""
    r, g, b = x.unbind(dim=1)
    # In-place steps on fresh temporaries: on the CPU, fewer large allocations run faster.
    maxc = x.amax(dim=1)
    minc = x.amin(dim=1)
    chroma = maxc - minc
    not_r = torch.sub(maxc, r).sign_()  # 0 where R is the max, else 1
    not_g = torch.sub(maxc, g).sign_()
    # next - prev of the max channel, g - b (R max), b - r (G max), r - g (B max), as
    # (g - b) + not_r * ((2b - r - g) + not_g * (2r - g - b)).
    diff = torch.sub(b, r).sub_(g).add_(b)
    diff.addcmul_(not_g, torch.sub(r, g).sub_(b).add_(r))
    diff = torch.sub(g, b).addcmul_(not_r, diff)
    h6 = diff.div_(chroma.clamp_min(1e-12))  # 0 where the pixel is gray (diff is 0 too)
    h6.add_(not_g.add_(1.0).mul_(not_r), alpha=2.0)  # + 2 * (index of the max channel): [-1, 5]
    t = h6.unsqueeze(1) + offsets.view(-1, 3, 1, 1)  # in [-4, 12]
    # tri(t) = |t mod 6 - 3| = ||(|t| - 6)| - 3| on [-12, 12]; ramp = clamp(tri - 1, 0, 1).
    ramp = t.abs_().sub_(6.0).abs_().sub_(3.0).abs_().sub_(1.0).clamp_(0.0, 1.0)
    return torch.addcmul(minc.unsqueeze(1), chroma.unsqueeze(1), ramp)


def blur_kernel_size(image_size: int) -> int:
    """SimCLR's blur kernel: about 10% of the image side, odd, at least 3."""
    k = max(3, int(round(0.1 * image_size)))
    return k if k % 2 == 1 else k + 1


def gaussian_blur(x: Tensor, sigma: Tensor | float, kernel_size: int, apply: Tensor | None = None) -> Tensor:
    """Per-image Gaussian blur (torchvision's kernel and reflect padding), separable.

    x: (B, C, H, W) float; sigma: (B,) or a float; apply: optional (B,) bool, False leaves
    that image unchanged (a delta kernel). One depthwise conv per direction for the batch:
    the batch is folded into the channels, each image gets its own kernel.
    """
    return blur(x, blur_kernels(_per_sample(sigma, x), kernel_size, apply))


def blur_kernels(sigma: Tensor, kernel_size: int, apply: Tensor | None = None) -> Tensor:
    """(B, kernel_size) normalised 1-D Gaussians (torchvision's), deltas where not apply."""
    if kernel_size % 2 != 1 or kernel_size < 1:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    half = kernel_size // 2
    t = torch.arange(kernel_size, dtype=sigma.dtype, device=sigma.device) - float(half)
    kernel = torch.exp(-0.5 * (t.view(1, -1) / sigma.clamp_min(1e-6).view(-1, 1)) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    if apply is not None:
        delta = (t == 0).to(sigma.dtype).view(1, -1)
        kernel = torch.where(apply.view(-1, 1), kernel, delta)
    return kernel


def blur(x: Tensor, kernel: Tensor) -> Tensor:
    """Separable blur of each image with its own 1-D kernel (B, k), reflect padding."""
    b, c, h, w = x.shape
    kernel_size = kernel.shape[1]
    half = kernel_size // 2
    if half >= min(h, w):
        raise ValueError(f"blur kernel {kernel_size} too large for {h}x{w} images")
    weight = kernel.to(x.dtype).repeat_interleave(c, dim=0)  # (B*C, k): the channels of image i use row i
    y = F.pad(x.reshape(1, b * c, h, w), (half, half, half, half), mode="reflect")
    y = F.conv2d(y, weight.view(b * c, 1, 1, kernel_size), groups=b * c)
    y = F.conv2d(y, weight.view(b * c, 1, kernel_size, 1), groups=b * c)
    return y.view(b, c, h, w)


# ------------------------------------------------------------------------ evaluation


class EvalTransform(nn.Module):
    """Deterministic evaluation transform: uint8 (B, 3, H, W) -> normalised float32
    (B, 3, image_size, image_size); bilinear antialiased resize when the size differs."""

    def __init__(self, image_size: int, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        super().__init__()
        if int(image_size) < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.image_size = int(image_size)
        self.mean, self.std = check_mean_std(mean, std)

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}"

    device: torch.device | None = None
    """Where images that are not tensors yet (numpy arrays, PIL images) are put; load_encoder sets it."""

    def forward(self, images) -> Tensor:
        images = as_image_batch(images, self.device)
        check_images(images)
        return _normalise(resize(to_float(images), self.image_size), self.mean, self.std)


IMAGES_HELP = ("give uint8 images as a tensor (B, 3, H, W) or (3, H, W), a numpy array (B, H, W, 3), (H, W, 3) "
               "or (H, W), a PIL image, or a list of same-sized images")


def as_image_batch(images, device: torch.device | None = None) -> Tensor:
    """A (B, 3, H, W) tensor from what people have at hand: a tensor (B, 3, H, W) or (3, H, W); a
    numpy array channels-last (B, H, W, 3), (H, W, 3), grey (H, W) or (B, H, W); a PIL image; or
    a list of those (same size). Grey is repeated to 3 channels."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError(f"no images: {IMAGES_HELP}")
        parts = [as_image_batch(item, device) for item in images]
        if len({tuple(p.shape[1:]) for p in parts}) > 1:
            raise ValueError(f"images of different sizes {sorted({tuple(p.shape[2:]) for p in parts})}: resize them "
                             "to one size first (the transform resizes a batch, not each image)")
        return torch.cat(parts)
    if isinstance(images, Tensor):
        return images.unsqueeze(0) if images.dim() == 3 and images.shape[0] == 3 else images
    if type(images).__module__.startswith("PIL."):
        import numpy as np

        images = np.asarray(images.convert("RGB"))
    if type(images).__module__ == "numpy":
        import numpy as np

        array = np.ascontiguousarray(images)
        if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"expected uint8 (or float in [0, 1]) images, got numpy {array.dtype}: {IMAGES_HELP}")
        if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] not in (1, 3):
            raise ValueError(f"a numpy array of shape {array.shape} looks channels-first: numpy images are "
                             "channels-last, (H, W, 3): pass array.transpose(1, 2, 0), or a tensor")
        if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] not in (1, 3)):  # grey: (H, W) or (B, H, W)
            array = np.repeat(array[..., None], 3, axis=-1)
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[-1] not in (1, 3):
            raise ValueError(f"expected channels-last images, got a numpy array of shape {array.shape}: {IMAGES_HELP}")
        if array.shape[-1] == 1:
            array = np.repeat(array, 3, axis=-1)
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))
        return tensor.to(device) if device is not None else tensor
    raise TypeError(f"expected images, got {type(images).__name__}: {IMAGES_HELP}")
