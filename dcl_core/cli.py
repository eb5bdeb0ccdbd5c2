"""`dcl`: the command line. Engine commands live here; the service and the worker add theirs
through the `dcl.commands` entry-point group (so the engine never imports them)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import dcl_core
from dcl_core.errors import UserError


def read_config_file(path: str) -> dict:
    """A JSON or YAML file as a dict; a clear error when it is missing or malformed."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file {path} does not exist")
    text = file.read_text()
    try:
        if file.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        raise UserError(f"config file {path} is not valid {'YAML' if file.suffix in ('.yaml', '.yml') else 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold an object of settings, got {type(data).__name__}")
    return data


def format_validation_error(exc) -> str:
    """A pydantic ValidationError of one of the config models, a line a problem (a misspelt field
    with its close matches)."""
    import dcl_core.config
    from dcl_core.field_hints import with_field_hints

    model = getattr(dcl_core.config, exc.title, None)
    lines = []
    for err in with_field_hints(exc.errors(), [model] if isinstance(model, type) else []):
        where = ".".join(str(p) for p in err["loc"]) or "config"
        lines.append(f"  {where}: {err['msg']}")
    return "invalid config:\n" + "\n".join(lines)


DATASET_HELP = """ (a source such as builtin:digits or a path, or a JSON spec for the other
DatasetSpec fields: '{"source": "builtin:digits", "split": "test"}')"""


def dataset_arg(text: str) -> str | dict:
    """A dataset option's value: a source string, or a JSON object parsed into a dict that the
    config models validate as a DatasetSpec (so `split`, `image_size`, `max_images` can be set)."""
    if not text.lstrip().startswith("{"):
        return text
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not a valid JSON dataset spec ({exc})") from None
    if not isinstance(spec, dict):
        raise argparse.ArgumentTypeError("a JSON dataset spec must be an object")
    return spec


def _json_object(text: str, option: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{option} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise UserError(f"{option} must be a JSON object")
    return value


def _data_env(args):
    from dcl_core.data.sources import DataEnv

    return DataEnv(
        torchvision_root=Path(args.data_root) if args.data_root else None,
        allow_download=args.download,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
    )


class _ProgressHooks:
    """A tqdm bar with loss and views/s; Ctrl-C stops cleanly after the current step."""

    def __init__(self, quiet: bool):
        self.quiet, self.bar, self.interrupted = quiet, None, False

    def on_start(self, total_steps, info):
        from tqdm import tqdm

        self.bar = tqdm(total=total_steps, initial=info["start_step"], unit="step", disable=self.quiet, dynamic_ncols=True)

    def on_step(self, step, metrics):
        self.bar.update(step - self.bar.n)
        shown = {"loss": f"{metrics['loss']:.4f}", "views/s": f"{metrics['views_per_s']:.0f}", "epoch": f"{metrics['epoch']:.2f}"}
        if "knn_acc" in metrics:
            shown["knn"] = f"{metrics['knn_acc']:.3f}"
        self.bar.set_postfix(shown, refresh=False)

    def should_stop(self):
        return self.interrupted

    def on_checkpoint(self, path, sha256):
        pass


def _init_distributed():
    """Under torchrun: join the process group and pin this rank's GPU. Returns the device string or None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return f"cuda:{local}"
    dist.init_process_group("gloo")
    return "cpu"


def cmd_train(args) -> int:
    from dcl_core.config import TrainConfig
    from dcl_core.training.train import fit

    raw = read_config_file(args.config)
    device = _init_distributed()
    if device is not None:
        raw["device"] = device
    config = TrainConfig.model_validate(raw)
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 alone reports
    hooks = _ProgressHooks(args.quiet or not main_rank)
    import signal

    def interrupt(signum, frame):
        if hooks.interrupted:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        hooks.interrupted = True
        print("\nstopping after this step (checkpoint kept; run the same command to resume)", file=sys.stderr)

    # Restored afterwards: `main` may run inside a longer-lived process (tests, a notebook).
    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        result = fit(config, Path(args.out), hooks, _data_env(args))
    finally:
        signal.signal(signal.SIGINT, previous)
        if hooks.bar is not None:
            hooks.bar.close()
    if result.stopped:
        if main_rank:
            print(f"stopped at step {result.steps}/{result.total_steps}; resume with the same command")
        return 130
    if main_rank:
        print(json.dumps({"out": str(args.out), "steps": result.steps, "seconds": round(result.seconds, 1),
                          "encoder_sha256": result.encoder_sha256, "metrics": result.final_metrics,
                          **({"compile_s": round(result.compile_s, 1)} if result.compile_s is not None else {}),
                          **({"scores": result.evaluation["scores"]} if result.evaluation else {}),
                          **({"warnings": result.warnings} if result.warnings else {})}, indent=2))
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_probe(args) -> int:
    from dcl_core.config import ProbeConfig
    from dcl_core.evaluation.probe import run_probe
    from dcl_core.files import write_json_atomic

    config = ProbeConfig(train=args.train, test=args.test, classifier=args.classifier, device=args.device,
                         **_given(args, "k", "epochs", "batch_size"))
    result = run_probe(Path(args.encoder), config, _data_env(args))
    out = result.to_dict()
    if args.out:
        write_json_atomic(Path(args.out), out)
    print(json.dumps(out, indent=2) if args.json else probe_summary(out))
    return 0


def probe_summary(result: dict) -> str:
    """`dcl probe`'s answer in a few lines: the score, the data, the weakest classes, the time."""
    per_class = result.get("per_class_accuracy") or []
    classes = result.get("classes") or [str(i) for i in range(len(per_class))]
    lines = [f"{result['classifier']} probe: top-1 {100 * result['accuracy']:.1f}% on {result['num_test']} test images "
             f"({result['num_train']} train, {len(per_class)} classes) in {result['seconds']:.1f} s"]
    scored = sorted((v, c) for v, c in zip(per_class, classes) if v is not None)
    if len(scored) > 1:
        weakest = ", ".join(f"{c} {100 * v:.0f}%" for v, c in scored[:3])
        lines.append(f"weakest classes: {weakest}; best: {scored[-1][1]} {100 * scored[-1][0]:.0f}%")
    return "\n".join(lines)


def cmd_embed(args) -> int:
    from dcl_core.config import EmbedConfig
    from dcl_core.evaluation.embed import labels_path_for, run_embed

    config = EmbedConfig(data=args.data, device=args.device, **_given(args, "batch_size"))
    path = run_embed(Path(args.encoder), config, Path(args.out), _data_env(args))
    print(describe_npy(path))
    labels = labels_path_for(path)
    if labels.exists():
        print(describe_npy(labels) + " (the labels, in the same order)")
    return 0


def describe_npy(path: Path) -> str:
    """"wrote feats.npy: float32 (1797, 64)", read from the file's header only."""
    import numpy as np

    array = np.load(path, mmap_mode="r", allow_pickle=False)
    return f"wrote {path}: {array.dtype} {tuple(array.shape)}"


def _given(args, *names: str) -> dict:
    """The options the user set (the config's defaults stay in one place: config.py)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def cmd_export(args) -> int:
    from dcl_core.export.hf import write_hf_folder

    if not (args.onnx or args.hf):
        raise UserError("say what to export: --onnx and/or --hf")
    out: dict = {}
    if args.onnx:
        from dcl_core.export.onnx import export_onnx

        record = export_onnx(Path(args.run_dir))
        out["onnx"] = {k: record[k] for k in ("file", "opset", "max_abs_diff")}
        for warning in record.get("warnings", []):
            print(f"warning: {warning}", file=sys.stderr)
    if args.hf:
        out["hf"] = str(write_hf_folder(Path(args.run_dir), args.hf_out))
    print(json.dumps(out, indent=2))
    return 0


def cmd_show_augment(args) -> int:
    import torch

    from dcl_core.config import AugmentConfig, DatasetSpec
    from dcl_core.data.sources import load_images
    from dcl_core.training.augment import SimCLRAugment
    from dcl_core.training.views import save_png, views_grid

    spec = DatasetSpec(source=args.dataset, image_size=args.image_size, max_images=max(args.n, 2))
    data = load_images(spec, _data_env(args))
    config = AugmentConfig.model_validate(_json_object(args.augment, "--augment") if args.augment else {})
    mean, std = data.channel_stats()
    augment = SimCLRAugment(config, data.image_size, mean, std)
    grid = views_grid(data.images[: args.n], augment, n_views=args.views, generator=torch.Generator().manual_seed(args.seed))
    save_png(grid, Path(args.out))
    print(args.out)
    return 0


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="folder holding torchvision datasets")
    p.add_argument("--download", action="store_true", help="allow torchvision datasets to download")
    p.add_argument("--cache-dir", help="where archives are extracted (default: a temp folder)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcl", description="Self-supervised contrastive pretraining (DCL, DCLW, SimCLR).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {dcl_core.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="pretrain an encoder from a JSON/YAML config")
    p.add_argument("config", help="config file (fields: see dcl_core/config.py TrainConfig)")
    p.add_argument("--out", required=True, help="run folder: encoder.safetensors, encoder.json, metrics.jsonl, checkpoints/")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_data_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("probe", help="linear-probe (or kNN) a trained encoder on labelled data")
    p.add_argument("--encoder", required=True, help="run folder or encoder.safetensors")
    p.add_argument("--train", required=True, type=dataset_arg, help="labelled training data" + DATASET_HELP)
    p.add_argument("--test", required=True, type=dataset_arg, help="labelled test data" + DATASET_HELP)
    p.add_argument("--classifier", choices=["logistic", "knn"], default="logistic")
    p.add_argument("--k", type=int, default=None, help="knn: neighbours (default 200)")
    p.add_argument("--epochs", type=int, default=None, help="logistic: optimisation steps (default 100)")
    p.add_argument("--batch-size", type=int, default=None, help="feature extraction batch (default 1024)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="also write the result as JSON here")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON (per-class accuracy, timings)")
    _add_data_options(p)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("embed", help="write the encoder's features for a dataset as .npy")
    p.add_argument("--encoder", required=True)
    p.add_argument("--data", required=True, type=dataset_arg, help="images to embed" + DATASET_HELP)
    p.add_argument("--out", required=True, help="FILE.npy (labelled data: FILE_labels.npy beside it too)")
    p.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default 1024)")
    p.add_argument("--device", default="auto")
    _add_data_options(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("export", help="write a run's encoder as ONNX and/or a Hugging Face-style folder")
    p.add_argument("run_dir", help="run folder holding encoder.safetensors and encoder.json")
    p.add_argument("--onnx", action="store_true", help="encoder.onnx, checked with onnxruntime (needs the onnx extra)")
    p.add_argument("--hf", action="store_true", help="config.json + model.safetensors")
    p.add_argument("--hf-out", default=None, help="folder for --hf (default: the run folder)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("show-augment", help="write a PNG of augmented views, to look at")
    p.add_argument("dataset")
    p.add_argument("--out", default="views.png")
    p.add_argument("--n", type=int, default=8, help="images (rows)")
    p.add_argument("--views", type=int, default=4, help="views per image")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", help='augment settings as JSON, e.g. \'{"crop_scale": [0.5, 1.0]}\' (AugmentConfig)')
    _add_data_options(p)
    p.set_defaults(func=cmd_show_augment)

    from dcl_core.lazy import load

    for target in command_entry_points():
        load(target)(sub)
    return parser


def command_entry_points(group: str = "dcl.commands") -> list[str]:
    """The `module:function` of each entry point in `group`, read straight from the installed
    distributions' entry_points.txt (importlib.metadata takes a tenth of a second to import,
    paid by every `dcl` command). The first distribution of a name on sys.path wins, as there."""
    targets, seen = [], set()
    for folder in sys.path:
        try:
            names = sorted(os.listdir(folder or "."))
        except OSError:
            continue
        for name in names:
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            dist = name.rsplit(".", 1)[0].split("-")[0].lower()
            if dist in seen:
                continue
            seen.add(dist)
            try:
                text = Path(folder or ".", name, "entry_points.txt").read_text()
            except OSError:
                continue
            section = None
            for line in text.splitlines():
                line = line.strip()
                if line.startswith("["):
                    section = line.strip("[]").strip()
                elif section == group and "=" in line and not line.startswith(("#", ";")):
                    targets.append(line.split("=", 1)[1].strip())
    return list(dict.fromkeys(targets))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from pydantic import ValidationError  # here, not at the top: `dcl jobs` starts faster

        if not isinstance(exc, ValidationError):
            raise
        print(f"error: {format_validation_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
