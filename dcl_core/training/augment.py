"""SimCLR views, batched and vectorised on the training device (pure torch): `SimCLRAugment`
and its random parameters; the pixel operations it composes are in `image_ops`.

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
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcl_core.config import AugmentConfig
from dcl_core.training.image_ops import (
    Constants,
    blend_matrices,
    blur,
    blur_kernel_size,
    blur_kernels,
    check_images,
    check_mean_std,
    constant,
    constants,
    linear_pass,
    shift_hue,
    to_float,
)

__all__ = ["AugmentParams", "SimCLRAugment"]

# Jitter op indices, as used in AugmentParams.order.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3

# On the CPU, the batch is processed in slices of about this many bytes of float pixels.
_CPU_CHUNK_BYTES = 1 << 19

# Columns of the one (B, _N_UNIFORM) uniform draw behind AugmentParams.
_N_UNIFORM = 17


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
    consts: Constants

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
        self.mean, self.std = check_mean_std(mean, std)
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
        return self.params_from_uniform(self.draw_uniform(batch_size, device, generator), height, width)

    def draw_uniform(self, batch_size: int, device: torch.device | str = "cpu",
                     generator: torch.Generator | None = None, out: Tensor | None = None) -> Tensor:
        """The one random draw behind a batch's parameters: float32 (batch_size, 17) uniforms,
        into `out` when given (a static buffer for a compiled step: the draw stays outside it)."""
        device = torch.device(device)
        if generator is not None and generator.device.type != device.type:
            raise ValueError(
                f"the generator is on {generator.device} but the images are on {device}: "
                "create it with torch.Generator(device=images.device)"
            )
        return torch.rand(batch_size, _N_UNIFORM, generator=generator, device=device, dtype=torch.float32, out=out)

    def params_from_uniform(self, u: Tensor, height: int, width: int) -> AugmentParams:
        """The parameters `sample_params` derives from its uniform draw `u` (see `draw_uniform`)."""
        cfg = self.config
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
        check_images(images)
        b, _, h, w = images.shape
        return self.apply(images, self.sample_params(b, h, w, images.device, generator))

    def apply(self, images: Tensor, params: AugmentParams) -> Tensor:
        """The view given its parameters (from `sample_params` of this module).

        Stages the config turns off (probability or strength 0) are skipped whatever the
        params say.
        """
        check_images(images)
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

    def prepare(self, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        """Make the cached constants for a device and dtype now, before a compiled step captures
        the augmentation (a graph must read them, not create them)."""
        self._normaliser(constants(torch.empty((), dtype=dtype, device=device)).eye)

    def _chunk(self, images: Tensor) -> int:
        if self.cpu_chunk is not None:
            return max(1, self.cpu_chunk or images.shape[0])
        per_image = 4 * 3 * max(self.image_size**2, images.shape[2] * images.shape[3])
        return max(1, _CPU_CHUNK_BYTES // per_image)

    def _plan(self, p: AugmentParams, dtype: torch.dtype) -> "_Plan":
        """Per-image coefficients of every stage, for the whole batch (small tensors)."""
        b = p.box.shape[0]
        consts = constants(p.box.new_empty((), dtype=dtype))

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
            matrices = blend_matrices(scale, mix * (ops == SATURATION), consts)  # (B, 6, 3, 3)
            mean_mix = mix * (ops == CONTRAST)
            if self._hue_on:
                hue_offsets = consts.hue_offsets.view(1, 3) + 6.0 * f[:, HUE : HUE + 1]
                hue_weight = on.to(dtype).view(-1, 1, 1, 1)

        kernels = blur_kernels(p.sigma.to(dtype), self.kernel_size, p.blur) if self._blur_on else None

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
        x = to_float(images)
        b = x.shape[0]
        size = [b, 3, self.image_size, self.image_size]
        grid = F.affine_grid(plan.theta, size, align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if plan.matrices is not None:
            for k in range(3):
                x = linear_pass(x, plan.matrices[:, k], plan.mean_mix[:, k], plan.consts)
            if plan.hue_offsets is not None:
                # lerp with weight 0 or 1 is exact: images without jitter are left untouched.
                x = x.lerp_(shift_hue(x, plan.hue_offsets), plan.hue_weight)
            for k in range(3, 6):
                x = linear_pass(x, plan.matrices[:, k], plan.mean_mix[:, k], plan.consts)
        if plan.kernels is not None:
            x = blur(x, plan.kernels)
        hw = self.image_size * self.image_size
        torch.baddbmm(plan.offset, plan.final, x.reshape(b, 3, hw), out=out.view(b, 3, hw))

    def _normaliser(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """(1 / std, -mean / std) on like's device and dtype, made once."""
        key = (str(like.device), like.dtype)
        found = self._normalisers.get(key)
        if found is None:
            inv_std = 1.0 / constant(self.std, like)
            found = self._normalisers[key] = (inv_std, -constant(self.mean, like) * inv_std)
        return found
