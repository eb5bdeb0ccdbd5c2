"""A Hugging Face-style model folder (`config.json` + `model.safetensors`) made from a run's
encoder files: the same weights and metadata under the names a model hub expects."""

from __future__ import annotations

from pathlib import Path

from dcl_core.export.encoder import HF_META_NAME, HF_WEIGHTS_NAME, locate, read_meta
from dcl_core.files import link_or_copy_atomic, write_json_atomic

HF_MODEL_TYPE = "dcl_encoder"


def write_hf_folder(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write `config.json` + `model.safetensors` (a Hugging Face-style model folder, ready for
    `huggingface-cli upload`) into `out_dir` (default: the run folder itself) from the run's
    encoder files. The weights are the same bytes (a hard link where possible); config.json is
    encoder.json with `model_type` added. `load_encoder(out_dir)` reads it back."""
    run_dir = Path(run_dir)
    weights_path, _ = locate(run_dir)
    meta = read_meta(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    link_or_copy_atomic(weights_path, out_dir / HF_WEIGHTS_NAME)
    write_json_atomic(out_dir / HF_META_NAME, {
        "model_type": HF_MODEL_TYPE, "library_name": "dcl-service", **meta, "weights_file": HF_WEIGHTS_NAME,
    })
    return out_dir
