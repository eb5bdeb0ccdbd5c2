"""`encoder.onnx`: the trained encoder for ONNX runtimes, checked against PyTorch after export.

The graph takes `images`, float32 (batch, 3, S, S) already normalised with encoder.json's
`mean`/`std` (as the PyTorch encoder does), and returns `features` (batch, feature_dim); the
batch dimension is dynamic. The opset is pinned (ONNX_OPSET) so the file does not change with
the torch version's default. After export, onnxruntime runs the file on a batch of a size the
export did not see, and the largest absolute difference from the PyTorch features is recorded
in encoder.json under `onnx`. Needs `pip install 'dcl-service[onnx]'`.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import torch

import dcl_core
from dcl_core.errors import UserError
from dcl_core.export.encoder import META_NAME, load_encoder
from dcl_core.files import sha256_file, write_json_atomic

ONNX_NAME = "encoder.onnx"
ONNX_OPSET = 18  # the lowest opset torch's dynamo exporter writes
CHECK_BATCH = 3  # differs from the export batch (2), so the check also proves the batch is dynamic
# Above this (relative to the features' scale) the file is reported as not faithful.
TOLERANCE = 1e-3


def export_onnx(run_dir: str | Path, out_path: str | Path | None = None) -> dict:
    """Export the run's encoder to `out_path` (default RUN_DIR/encoder.onnx), check it with
    onnxruntime and record the check in RUN_DIR/encoder.json. Returns the record, with
    `warnings` when the ONNX features differ from PyTorch's beyond TOLERANCE."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise UserError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'dcl-service[onnx]'") from exc
    run_dir = Path(run_dir)
    out_path = Path(out_path) if out_path is not None else run_dir / ONNX_NAME
    encoder = load_encoder(run_dir, device="cpu")
    size = int(encoder.meta["image_size"])
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    partial = out_path.with_name(f".{out_path.name}.tmp")
    try:
        # The exporter prints its progress and warns about its own internals: not the user's business.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                encoder, (example,), str(partial), input_names=["images"], output_names=["features"],
                opset_version=ONNX_OPSET, dynamo=True, external_data=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )
    except Exception as exc:  # an operator the exporter cannot translate: the user can only report it
        partial.unlink(missing_ok=True)
        raise UserError(f"{encoder.meta['encoder']}: torch.onnx.export failed ({type(exc).__name__}: "
                        f"{str(exc)[:500]})") from exc
    partial.replace(out_path)

    check = torch.randn(CHECK_BATCH, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = encoder(check)
    session = onnxruntime.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(["features"], {"images": check.numpy()})[0])
    if got.shape != expected.shape:
        raise UserError(f"{out_path}: onnxruntime gave features of shape {tuple(got.shape)}, "
                        f"PyTorch {tuple(expected.shape)}")
    max_abs_diff = float((got - expected).abs().max())
    record = {
        "file": out_path.name, "sha256": sha256_file(out_path), "opset": ONNX_OPSET,
        "input": f"images: float32 (batch, 3, {size}, {size}), normalised with mean/std",
        "output": f"features: float32 (batch, {expected.shape[1]})",
        "max_abs_diff": max_abs_diff, "checked_batch": CHECK_BATCH,
        "torch_version": torch.__version__, "onnxruntime_version": onnxruntime.__version__,
        "dcl_core_version": dcl_core.__version__,
    }
    scale = max(1.0, float(expected.abs().max()))
    if max_abs_diff > TOLERANCE * scale:
        record["warnings"] = [f"{out_path.name}: onnxruntime's features differ from PyTorch's by up to "
                              f"{max_abs_diff:.3g} (features up to {scale:.3g}); check it before deploying"]
    meta_path = run_dir / META_NAME
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["onnx"] = record
    write_json_atomic(meta_path, meta)
    return record
