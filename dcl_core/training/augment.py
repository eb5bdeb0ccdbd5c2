"""SimCLR views, batched and vectorised on the training device (pure torch).

`SimCLRAugment` turns a uint8 batch (B, 3, H, W) into one normalised view per image; call it
twice on the same batch for the two views of a contrastive step. It follows SimCLR (Chen et
al. 2020, appendix A) with torchvision's semantics, but draws every random number for the
whole batch at once and applies every operation to the whole batch, so it runs where the
batch already is (CPU or GPU) with no per-image Python loop, no PIL and no host-device sync:
no `.item()`, no `.cpu()`, no Python branch on tensor values (only on the config and on
shapes), no tensor built from Python values on the device (small constants are made by
device-side fills, once per device). The per-image coefficients of every stage are computed
for the whole batch first (small tensors); the pixel work then runs in one pass on a GPU, and
on the CPU over slices of the batch that fit the cache (`cpu_chunk`; the same result).

Per view, in this order (each image draws its own parameters):

1. Random resized crop + resize + horizontal flip: ONE `F.affine_grid` + `F.grid_sample`
   (bilinear, `align_corners=False`, border padding) for the batch. The crop's area fraction
   is uniform in `crop_scale` and its aspect ratio (w/h) log-uniform in `crop_ratio`; instead
   of torchvision's rejection loop, w and h are clamped to the image and the offset drawn
   uniformly in what is left. Crops are continuous (not whole pixels). The flip negates the x
   scale of the same affine. Resizing with bilinear sampling has no antialiasing: fine for
   SimCLR (the crop is at most the image, shown at image_size), aliased if the source is much
   larger than `image_size`.
2. Colour jitter with probability `jitter_p`: brightness, contrast, saturation and hue with
   per-image factors (brightness/contrast/saturation uniform in [max(0, 1-x), 1+x], hue shift
   uniform in [-h, h]) applied in a per-image random order, like `ColorJitter`. Blending as
   torchvision: contrast blends with the image's mean grayscale, saturation with the
   grayscale image, clamp to [0, 1] after each op. Brightness, contrast and saturation are
   each `clamp(M x + c)` with a per-image 3x3 colour matrix M and offset c, so a stage is one
   `baddbmm` whatever op each image picked. Hue is the HSV hue shift of torchvision (RGB ->
   HSV, shift H, -> RGB, here in a closed form), not the YIQ rotation. As hue happens once per
   image, the jitter runs as: the linear ops before each image's hue (stages 0-2, identity
   for the others), hue once for the batch, the linear ops after it (stages 1-3): the same
   result as applying the four ops in each image's order, with one hue pass instead of four.
3. Grayscale with probability `grayscale_p` (ITU-R 601-2 luma: 0.299, 0.587, 0.114,
   replicated to 3 channels).
4. Gaussian blur with probability `config.blur_probability(image_size)`: odd kernel of about
   10% of `image_size` (at least 3), sigma uniform in `blur_sigma` per image, reflect padding
   as torchvision, as a separable depthwise convolution with the batch folded into the
   channels (one kernel per image).
5. Normalisation with `mean`/`std`.

Grayscale and normalisation are per-pixel colour-affine maps and the blur is the same linear
filter on each channel (weights summing to 1), so they commute: grayscale and normalisation
run fused as one affine after the blur; the result equals grayscale-then-blur-then-normalise.
Everything is float32 (or the input's floating dtype) in [0, 1] until normalisation.

Randomness: `forward(images, generator)` draws all its random numbers from `generator` (or
the default generator of `images.device` when None). The generator must live on the same
device as the images (`torch.Generator(device=images.device)`); a seeded generator gives a
reproducible view. Operations whose probability or strength is 0 in the config are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcl_core.config import AugmentConfig

__all__ = [
    "LUMA",
    "AugmentParams",
    "SimCLRAugment",
    "EvalTransform",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "rgb_to_grayscale",
    "gaussian_blur",
    "blur_kernel_size",
    "views_grid",
    "save_png",
]

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L")

# Jitter op indices, as used in AugmentParams.order.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3

# On the CPU, the batch is processed in slices of about this many bytes of float pixels.
_CPU_CHUNK_BYTES = 1 << 19

# Columns of the one (B, _N_UNIFORM) uniform draw behind AugmentParams.
_N_UNIFORM = 17


# ----------------------------------------------------------------------------- helpers


def _constant(values: tuple[float, ...], like: Tensor) -> Tensor:
    """A small 1-D tensor on `like`'s device and dtype, filled on the device (no host copy)."""
    return torch.stack([like.new_full((), float(v)) for v in values])


class _Constants:
    """Small constant tensors for one device and dtype, made once (device-side fills)."""

    def __init__(self, like: Tensor) -> None:
        self.eye = torch.eye(3, dtype=like.dtype, device=like.device)
        self.luma = _constant(LUMA, like)
        self.luma_rows = self.luma.expand(3, 3).contiguous()  # luma_rows @ rgb = gray, 3 times
        self.hue_offsets = _constant((0.0, 4.0, 2.0), like)  # R, G, B in sixths of a turn
        steps = torch.arange(6, device=like.device)
        # The jitter's six linear passes: order positions 0, 1, 2 (before each image's hue)
        # then 1, 2, 3 (after it).
        self.pass_position = torch.where(steps < 3, steps, steps - 2)
        self.pass_before_hue = steps < 3


_CONSTANTS: dict[tuple[str, torch.dtype], _Constants] = {}


def _constants(like: Tensor) -> _Constants:
    key = (str(like.device), like.dtype)
    found = _CONSTANTS.get(key)
    if found is None:
        found = _CONSTANTS[key] = _Constants(like)
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


def _check_images(images: Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if not (images.dtype == torch.uint8 or images.is_floating_point()):
        raise TypeError(f"expected uint8 (or float in [0, 1]) images, got {images.dtype}")


def _to_float(images: Tensor) -> Tensor:
    """uint8 -> float32 in [0, 1]; floating images are taken as already in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).mul_(1.0 / 255.0)
    return images


def _check_mean_std(mean, std) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    mean = tuple(float(v) for v in mean)
    std = tuple(float(v) for v in std)
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got {mean} and {std}")
    if min(std) <= 0:
        raise ValueError(f"std must be > 0 for every channel, got {std}")
    return mean, std  # type: ignore[return-value]


def _normalise(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    m = _constant(mean, x).view(1, 3, 1, 1)
    s = _constant(std, x).view(1, 3, 1, 1)
    return (x - m) / s


def _resize(x: Tensor, size: int) -> Tensor:
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)


# ------------------------------------------------------------- pure per-sample colour ops


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """(B, 3, H, W) float -> (B, 1, H, W) luma (ITU-R 601-2)."""
    r, g, b = x.unbind(dim=1)
    return (r * LUMA[0] + g * LUMA[1] + b * LUMA[2]).unsqueeze(1)


def _linear_pass(x: Tensor, matrix: Tensor, mean_mix: Tensor, consts: _Constants) -> Tensor:
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


def _blend_matrices(scale: Tensor, gray_mix: Tensor, consts: _Constants) -> Tensor:
    """scale * I + gray_mix * G, batched over the leading dims of scale/gray_mix."""
    return scale[..., None, None] * consts.eye + gray_mix[..., None, None] * consts.luma_rows


def adjust_brightness(x: Tensor, factor: Tensor | float) -> Tensor:
    """torchvision's adjust_brightness with a factor per image: clamp(f * x, 0, 1)."""
    f, c = _per_sample(factor, x), _constants(x)
    zero = torch.zeros_like(f)
    return _linear_pass(x, _blend_matrices(f, zero, c), zero, c)


def adjust_contrast(x: Tensor, factor: Tensor | float) -> Tensor:
    """torchvision's adjust_contrast per image: blend with the mean of the grayscale image."""
    f, c = _per_sample(factor, x), _constants(x)
    return _linear_pass(x, _blend_matrices(f, torch.zeros_like(f), c), 1.0 - f, c)


def adjust_saturation(x: Tensor, factor: Tensor | float) -> Tensor:
    """torchvision's adjust_saturation per image: blend with the grayscale image."""
    f, c = _per_sample(factor, x), _constants(x)
    return _linear_pass(x, _blend_matrices(f, 1.0 - f, c), torch.zeros_like(f), c)


def adjust_hue(x: Tensor, shift: Tensor | float) -> Tensor:
    """torchvision's adjust_hue per image: shift the HSV hue by `shift` (a fraction of a turn).

    A closed form of RGB -> HSV -> shift -> RGB with no branches: with max M, min m and
    chroma C = M - m, the hue in sixths is h6 = 2 * k + (next - prev) / C where k is the max
    channel (0 R, 1 G, 2 B; ties give the same hue) and next/prev are the channels after and
    before it. The shifted hue gives each channel m + C * ramp(h6 + o) with o = 0, 4, 2 for
    R, G, B and ramp(t) = clamp(tri(t) - 1, 0, 1), tri the 6-periodic triangle wave
    |t mod 6 - 3| (here folded with abs). Value and saturation are kept, as in HSV.
    """
    offsets = _constants(x).hue_offsets.view(1, 3) + 6.0 * _per_sample(shift, x).view(-1, 1)
    return _shift_hue(x, offsets)


def _shift_hue(x: Tensor, offsets: Tensor) -> Tensor:
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
    return _blur(x, _blur_kernels(_per_sample(sigma, x), kernel_size, apply))


def _blur_kernels(sigma: Tensor, kernel_size: int, apply: Tensor | None = None) -> Tensor:
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


def _blur(x: Tensor, kernel: Tensor) -> Tensor:
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


# ------------------------------------------------------------------------- the views


@dataclass(frozen=True)
class AugmentParams:
    """The random draws behind one view of a batch (all tensors on the batch's device).

    box: (B, 4) float32 crop x0, y0, width, height as fractions of the input width/height;
    flip: (B,) bool; jitter: (B,) bool; factors: (B, 4) float32 brightness, contrast and
    saturation factors and the hue shift; order: (B, 4) int64, each row a permutation of the
    op indices (0 brightness, 1 contrast, 2 saturation, 3 hue), applied left to right;
    grayscale: (B,) bool; blur: (B,) bool; sigma: (B,) float32 blur sigma.
    `params[i:j]` is the parameters of images i..j-1.
    """

    box: Tensor
    flip: Tensor
    jitter: Tensor
    factors: Tensor
    order: Tensor
    grayscale: Tensor
    blur: Tensor
    sigma: Tensor

    def __getitem__(self, index: slice) -> "AugmentParams":
        return AugmentParams(*(getattr(self, f.name)[index] for f in fields(self)))

    def __len__(self) -> int:
        return self.box.shape[0]


class _Plan(NamedTuple):
    """Per-image stage coefficients (leading dim B) computed once per batch; None: stage off."""

    theta: Tensor  # (B, 2, 3) crop + flip affine
    matrices: Tensor | None  # (B, 6, 3, 3) jitter linear passes
    mean_mix: Tensor | None  # (B, 6) their contrast terms
    hue_offsets: Tensor | None  # (B, 3)
    hue_weight: Tensor | None  # (B, 1, 1, 1) 1.0 where jittered
    kernels: Tensor | None  # (B, k) blur kernels (deltas where not blurred)
    final: Tensor  # (B, 3, 3) grayscale + 1/std
    offset: Tensor  # (B, 3, 1) -mean/std
    consts: _Constants

    def slice(self, start: int, end: int) -> "_Plan":
        return _Plan(*(t[start:end] if isinstance(t, Tensor) else t for t in self))


class SimCLRAugment(nn.Module):
    """One SimCLR view per image of a uint8 batch; call twice for the two views.

    `forward(images, generator=None)`: images uint8 (B, 3, H, W) on any device (or float in
    [0, 1]); returns float32 (B, 3, image_size, image_size), normalised with mean/std, on the
    same device. `generator`, if given, must be on the images' device. See the module doc.
    `mean`/`std` are the resolved normalisation (the config's own mean/std fields, which may
    be None for "measure on the dataset", are not read here).

    `cpu_chunk`: on the CPU the batch is processed in slices of this many images (the same
    result: the parameters are drawn and prepared for the whole batch at once); slices that
    fit the cache run faster and avoid the page faults of large temporaries. None: slices of
    about 512 KiB of float pixels (42 images at 32 px); 0: the whole batch. Other devices
    always take the whole batch in one pass.
    """

    def __init__(
        self,
        config: AugmentConfig,
        image_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        cpu_chunk: int | None = None,
    ) -> None:
        super().__init__()
        if int(image_size) < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.config = config
        self.image_size = int(image_size)
        self.mean, self.std = _check_mean_std(mean, std)
        self.cpu_chunk = None if cpu_chunk is None else int(cpu_chunk)
        self.blur_p = float(config.blur_probability(self.image_size))
        self.kernel_size = blur_kernel_size(self.image_size)
        # Static switches (config only, never tensor values).
        self._jitter_on = config.jitter_p > 0 and (
            config.brightness > 0 or config.contrast > 0 or config.saturation > 0 or config.hue > 0
        )
        self._hue_on = self._jitter_on and config.hue > 0
        self._gray_on = config.grayscale_p > 0
        self._blur_on = self.blur_p > 0
        self._normalisers: dict[tuple[str, torch.dtype], tuple[Tensor, Tensor]] = {}

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, config={self.config!r}"

    def sample_params(
        self,
        batch_size: int,
        height: int,
        width: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> AugmentParams:
        """Draw one view's parameters for a batch of `batch_size` images of height x width."""
        device = torch.device(device)
        if generator is not None and generator.device.type != device.type:
            raise ValueError(
                f"the generator is on {generator.device} but the images are on {device}: "
                "create it with torch.Generator(device=images.device)"
            )
        cfg = self.config
        u = torch.rand(batch_size, _N_UNIFORM, generator=generator, device=device, dtype=torch.float32)

        lo, hi = cfg.crop_scale
        area = lo + (hi - lo) * u[:, 0]
        log_lo, log_hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])  # width / height in pixels
        wf = torch.sqrt(area * ratio * (height / width)).clamp(max=1.0)
        hf = torch.sqrt(area / ratio * (width / height)).clamp(max=1.0)
        box = torch.stack([u[:, 2] * (1.0 - wf), u[:, 3] * (1.0 - hf), wf, hf], dim=1)

        def factor(col: int, strength: float) -> Tensor:
            low = max(0.0, 1.0 - strength)
            return low + (1.0 + strength - low) * u[:, col]

        factors = torch.stack(
            [
                factor(6, cfg.brightness),
                factor(7, cfg.contrast),
                factor(8, cfg.saturation),
                cfg.hue * (2.0 * u[:, 9] - 1.0),
            ],
            dim=1,
        )
        s_lo, s_hi = cfg.blur_sigma
        return AugmentParams(
            box=box,
            flip=u[:, 4] < cfg.hflip_p,
            jitter=u[:, 5] < cfg.jitter_p,
            factors=factors,
            order=torch.argsort(u[:, 10:14], dim=1),
            grayscale=u[:, 14] < cfg.grayscale_p,
            blur=u[:, 15] < self.blur_p,
            sigma=s_lo + (s_hi - s_lo) * u[:, 16],
        )

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_images(images)
        b, _, h, w = images.shape
        return self.apply(images, self.sample_params(b, h, w, images.device, generator))

    def apply(self, images: Tensor, params: AugmentParams) -> Tensor:
        """The view given its parameters (from `sample_params` of this module).

        Stages the config turns off (probability or strength 0) are skipped whatever the
        params say.
        """
        _check_images(images)
        b = images.shape[0]
        if len(params) != b:
            raise ValueError(f"params for {len(params)} images, got {b}")
        dtype = images.dtype if images.is_floating_point() else torch.float32
        out = torch.empty((b, 3, self.image_size, self.image_size), dtype=dtype, device=images.device)
        if b == 0:
            return out
        plan = self._plan(params, dtype)
        step = self._chunk(images) if images.device.type == "cpu" else b
        for start in range(0, b, step):  # one pass unless chunked on the CPU
            end = min(start + step, b)
            self._render(images[start:end], plan.slice(start, end), out[start:end])
        return out

    def _chunk(self, images: Tensor) -> int:
        if self.cpu_chunk is not None:
            return max(1, self.cpu_chunk or images.shape[0])
        per_image = 4 * 3 * max(self.image_size**2, images.shape[2] * images.shape[3])
        return max(1, _CPU_CHUNK_BYTES // per_image)

    def _plan(self, p: AugmentParams, dtype: torch.dtype) -> "_Plan":
        """Per-image coefficients of every stage, for the whole batch (small tensors)."""
        b = p.box.shape[0]
        consts = _constants(p.box.new_empty((), dtype=dtype))

        # Crop + flip: affine_grid maps output coords in [-1, 1] to input coords, the crop's
        # centre and half-extent in normalised coordinates; a negative x scale mirrors it.
        x0, y0, wf, hf = p.box.to(dtype).unbind(dim=1)
        zero = torch.zeros_like(wf)
        sx = torch.where(p.flip, -wf, wf)
        theta = torch.stack([sx, zero, 2.0 * x0 + wf - 1.0, zero, hf, 2.0 * y0 + hf - 1.0], dim=1)

        matrices = mean_mix = hue_offsets = hue_weight = None
        if self._jitter_on:
            # ColorJitter in each image's order as 3 linear passes, hue, 3 linear passes: pass
            # k applies each image's op at order position consts.pass_position[k] if that op
            # is linear and comes before (k < 3) or after (k >= 3) the image's hue, else
            # nothing; every linear op of every order lands in exactly one pass.
            f = p.factors.to(dtype)
            on = p.jitter.view(-1, 1)
            hue_at = (p.order == HUE).to(torch.int64).argmax(dim=1, keepdim=True)  # (B, 1)
            ops = torch.cat([p.order[:, :3], p.order[:, 1:]], dim=1)  # (B, 6): each pass's op
            position = consts.pass_position
            in_phase = torch.where(consts.pass_before_hue, hue_at > position, hue_at < position)
            active = in_phase & on & (ops != HUE)
            scale = torch.where(active, f.gather(1, ops), torch.ones_like(f[:, :1]))  # (B, 6)
            mix = 1.0 - scale  # 0 where the pass does nothing
            matrices = _blend_matrices(scale, mix * (ops == SATURATION), consts)  # (B, 6, 3, 3)
            mean_mix = mix * (ops == CONTRAST)
            if self._hue_on:
                hue_offsets = consts.hue_offsets.view(1, 3) + 6.0 * f[:, HUE : HUE + 1]
                hue_weight = on.to(dtype).view(-1, 1, 1, 1)

        kernels = _blur_kernels(p.sigma.to(dtype), self.kernel_size, p.blur) if self._blur_on else None

        # Grayscale and normalisation, one affine per image: diag(1/std) (G or I) rgb - mean/std.
        inv_std, shift = self._normaliser(consts.eye)
        if self._gray_on:
            colour = torch.where(p.grayscale.view(b, 1, 1), consts.luma_rows, consts.eye)
        else:
            colour = consts.eye.expand(b, 3, 3)
        final = colour * inv_std.view(1, 3, 1)
        return _Plan(theta.view(b, 2, 3), matrices, mean_mix, hue_offsets, hue_weight, kernels, final,
                     shift.view(1, 3, 1).expand(b, 3, 1), consts)

    def _render(self, images: Tensor, plan: "_Plan", out: Tensor) -> None:
        """Apply a plan to its images (a chunk of the batch), writing the views into out."""
        x = _to_float(images)
        b = x.shape[0]
        size = [b, 3, self.image_size, self.image_size]
        grid = F.affine_grid(plan.theta, size, align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if plan.matrices is not None:
            for k in range(3):
                x = _linear_pass(x, plan.matrices[:, k], plan.mean_mix[:, k], plan.consts)
            if plan.hue_offsets is not None:
                # lerp with weight 0 or 1 is exact: images without jitter are left untouched.
                x = x.lerp_(_shift_hue(x, plan.hue_offsets), plan.hue_weight)
            for k in range(3, 6):
                x = _linear_pass(x, plan.matrices[:, k], plan.mean_mix[:, k], plan.consts)
        if plan.kernels is not None:
            x = _blur(x, plan.kernels)
        hw = self.image_size * self.image_size
        torch.baddbmm(plan.offset, plan.final, x.reshape(b, 3, hw), out=out.view(b, 3, hw))

    def _normaliser(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """(1 / std, -mean / std) on like's device and dtype, made once."""
        key = (str(like.device), like.dtype)
        found = self._normalisers.get(key)
        if found is None:
            inv_std = 1.0 / _constant(self.std, like)
            found = self._normalisers[key] = (inv_std, -_constant(self.mean, like) * inv_std)
        return found


class EvalTransform(nn.Module):
    """Deterministic evaluation transform: uint8 (B, 3, H, W) -> normalised float32
    (B, 3, image_size, image_size); bilinear antialiased resize when the size differs."""

    def __init__(self, image_size: int, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        super().__init__()
        if int(image_size) < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.image_size = int(image_size)
        self.mean, self.std = _check_mean_std(mean, std)

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}"

    def forward(self, images: Tensor) -> Tensor:
        _check_images(images)
        return _normalise(_resize(_to_float(images), self.image_size), self.mean, self.std)


# ----------------------------------------------------------------- looking at the views


def views_grid(
    images: Tensor,
    augment: SimCLRAugment,
    n_views: int = 2,
    generator: torch.Generator | None = None,
    padding: int = 2,
) -> Tensor:
    """A picture of the augmentation: uint8 (3, H', W') on the CPU.

    One row per image: the original resized to `augment.image_size`, then `n_views` views
    (de-normalised), separated and framed by `padding` white pixels. With S = image_size and
    p = padding: H' = B * (S + p) + p and W' = (n_views + 1) * (S + p) + p.
    """
    _check_images(images)
    if n_views < 0 or padding < 0:
        raise ValueError("n_views and padding must be >= 0")
    size = augment.image_size
    with torch.no_grad():
        cells = [_resize(_to_float(images), size).to(torch.float32)]
        mean = _constant(augment.mean, cells[0]).view(1, 3, 1, 1)
        std = _constant(augment.std, cells[0]).view(1, 3, 1, 1)
        for _ in range(n_views):
            cells.append(augment(images, generator).to(torch.float32) * std + mean)
        grid = torch.stack(cells, dim=1).clamp_(0.0, 1.0)  # (B, V+1, 3, S, S)
        b, v = grid.shape[:2]
        grid = F.pad(grid, (padding, 0, padding, 0), value=1.0)  # left/top of every cell
        side = size + padding
        grid = grid.permute(2, 0, 3, 1, 4).reshape(3, b * side, v * side)
        grid = F.pad(grid, (0, padding, 0, padding), value=1.0)  # the right/bottom frame
        return grid.mul_(255.0).round_().to(torch.uint8).cpu()


def save_png(grid: Tensor, path: str | Path) -> Path:
    """Write a uint8 (3, H, W) image tensor as a PNG (PIL); returns the path."""
    from PIL import Image

    if grid.dtype != torch.uint8 or grid.dim() != 3 or grid.shape[0] != 3:
        raise ValueError(f"expected a uint8 (3, H, W) tensor, got {grid.dtype} {tuple(grid.shape)}")
    path = Path(path)
    array = grid.detach().cpu().permute(1, 2, 0).contiguous().numpy()
    Image.fromarray(array).save(path, format="PNG")
    return path
