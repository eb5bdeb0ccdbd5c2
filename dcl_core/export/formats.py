"""The extra formats a config asks for (`TrainConfig.export`: `onnx`, `hf`), written beside a
run's encoder files when training ends."""

from __future__ import annotations

from pathlib import Path

from dcl_core.errors import UserError
from dcl_core.export.hf import write_hf_folder
from dcl_core.export.onnx import export_onnx


def export_formats(run_dir: str | Path, formats: list[str]) -> list[str]:
    """Write the extra formats a config asks for (`onnx`, `hf`) beside the run's encoder files.
    Returns warnings: a failed extra format never loses the trained encoder (it can be made
    again with `dcl export`)."""
    problems = []
    for fmt in ("onnx", "hf"):  # onnx first: its check result goes into encoder.json, then config.json
        if fmt not in formats:
            continue
        try:
            if fmt == "onnx":
                problems += export_onnx(run_dir).get("warnings", [])
            else:
                write_hf_folder(run_dir)
        except (UserError, OSError) as exc:
            problems.append(f"export {fmt} failed: {exc}; the encoder is saved, retry with `dcl export --{fmt} RUN_DIR`")
    return problems
