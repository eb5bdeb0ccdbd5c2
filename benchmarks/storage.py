"""The object store against the file store, in one run (issue 16).

    python benchmarks/storage.py                       # the 10k CIFAR zip of /work/shared/data
    python benchmarks/storage.py --zip other.zip --checkpoint-mb 45

The S3 side is moto's standalone server (`python -m moto.server`, its own process) on 127.0.0.1
(real HTTP, the real boto3 client, objects in that server's memory), so it measures the protocol and this code, not a network: a real
store adds its round trips and bandwidth. Every figure is the median of `--repeats`, printed
with its ratio to the file backend measured the same way in the same run:

- dataset upload: `storage.add_dataset` of the checked tree (file: a rename; s3: pack, upload,
  keep it in this machine's cache);
- dataset fetch on a cold and a warm worker cache, then reading every file of it (what a job
  start does);
- a checkpoint upload (file: the hard link `publish_checkpoint` makes, as a copy across volumes
  would be slower; s3: multipart upload);
- an epoch stretched by a background checkpoint upload: a CPU-bound loop (numpy) timed alone
  and with `CheckpointUploader` sending the checkpoint meanwhile;
- an artifact download: reading the whole file (file) or streaming it with `open_range` (s3).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from dcl_core.data.stored import store_dataset  # noqa: E402
from dcl_core.files import link_or_copy_atomic  # noqa: E402
from service.control.dataset_cache import DatasetCache  # noqa: E402
from service.control.objectstore import S3Store, parse_storage_url  # noqa: E402
from service.control.storage import LocalStorage  # noqa: E402
from tests.fixtures.s3 import CREDENTIALS, S3Endpoint  # noqa: E402
from tests.fixtures.servers import free_port, wait_for_port  # noqa: E402
from worker.checkpoint_upload import CheckpointUploader  # noqa: E402

DEFAULT_ZIP = Path("/work/shared/data/cifar10-train-10k.zip")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def read_all(folder: Path) -> int:
    return sum(len(p.read_bytes()) for p in Path(folder).rglob("*") if p.is_file())


def epoch(seconds_of_work: int) -> None:
    a = np.random.default_rng(0).standard_normal((300, 300))
    for _ in range(seconds_of_work):
        a = np.tanh(a @ a.T / 300)


@contextlib.contextmanager
def moto_process():
    endpoint = S3Endpoint(free_port(), "bench")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(endpoint.port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(endpoint.port, 30, proc)
        endpoint.client().create_bucket(Bucket=endpoint.bucket)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP)
    parser.add_argument("--checkpoint-mb", type=int, default=45)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epoch-steps", type=int, default=400, help="numpy steps of the stand-in epoch")
    args = parser.parse_args()
    os.environ.update(CREDENTIALS)
    rows: list[tuple[str, float, float]] = []

    with tempfile.TemporaryDirectory(prefix="dcl-bench-storage-") as tmp, moto_process() as endpoint:
        root = Path(tmp)
        store = S3Store(parse_storage_url(f"s3://{endpoint.bucket}/bench"), endpoint_url=endpoint.url)

        def storages(tag: str) -> tuple[LocalStorage, LocalStorage]:
            file = LocalStorage(root / tag / "f-art", root / tag / "f-ds")
            file.datasets_dir.mkdir(parents=True)  # as Settings.ensure_dirs does
            s3 = LocalStorage(root / tag / "s-art", root / tag / "s-ds", remote=store,
                              cache=DatasetCache(root / tag / "s-cache", 100 * 1024**3))
            return file, s3

        checked = root / "checked"
        summary = store_dataset(args.zip, checked, filename=args.zip.name, max_total_bytes=8 * 1024**3,
                                max_files=200_000)
        print(f"dataset: {args.zip.name}, {summary.num_images} images, {read_all(checked) / 1e6:.1f} MB stored")

        upload_f, upload_s, cold, warm, plain = [], [], [], [], []
        for i in range(args.repeats):
            file, s3 = storages(f"up{i}")
            for target, times in ((file, upload_f), (s3, upload_s)):
                tree = root / f"tree{i}-{len(times)}-{id(target)}"
                shutil.copytree(checked, tree)
                times.append(timed(lambda: target.add_dataset(f"ds_{i:08x}", tree)))
            sha = store.head(f"datasets/ds_{i:08x}/dataset.tar")["sha256"]
            plain.append(timed(lambda: read_all(file.dataset_folder(f"ds_{i:08x}", None))))
            worker = LocalStorage(root / f"w{i}" / "art", root / f"w{i}" / "ds", remote=store,
                                  cache=DatasetCache(root / f"w{i}" / "cache", 100 * 1024**3))
            cold.append(timed(lambda: read_all(worker.dataset_folder(f"ds_{i:08x}", sha))))
            warm.append(timed(lambda: read_all(worker.dataset_folder(f"ds_{i:08x}", sha))))
        rows += [("dataset upload (add_dataset)", statistics.median(upload_f), statistics.median(upload_s)),
                 ("job start: dataset, cold cache + read", statistics.median(plain), statistics.median(cold)),
                 ("job start: dataset, warm cache + read", statistics.median(plain), statistics.median(warm))]

        checkpoint = root / "ckpt" / "last.pt"
        checkpoint.parent.mkdir()
        checkpoint.write_bytes(os.urandom(args.checkpoint_mb * 1024**2))
        link_f, put_s, get_f, get_s = [], [], [], []
        for i in range(args.repeats):
            link_f.append(timed(lambda: link_or_copy_atomic(checkpoint, root / "ckpt" / f"pub{i}.pt")))
            put_s.append(timed(lambda: store.put_file(f"jobs/job_{i:08x}/checkpoint.pt", checkpoint)))
            get_f.append(timed(lambda: (root / "ckpt" / f"pub{i}.pt").read_bytes()))

            def stream():
                body = store.open_range(f"jobs/job_{i:08x}/checkpoint.pt")
                while body.read(1 << 20):
                    pass

            get_s.append(timed(stream))
        rows += [(f"{args.checkpoint_mb} MB checkpoint upload", statistics.median(link_f), statistics.median(put_s)),
                 (f"{args.checkpoint_mb} MB artifact download (whole)", statistics.median(get_f),
                  statistics.median(get_s))]

        alone, beside = [], []
        for i in range(args.repeats):
            alone.append(timed(lambda: epoch(args.epoch_steps)))
            _, s3 = storages(f"ep{i}")
            uploader = CheckpointUploader(s3, f"job_e{i:07x}", checkpoint.parent)
            sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()  # the engine hands it over

            def with_upload():
                uploader.submit(checkpoint, sha)
                epoch(args.epoch_steps)

            beside.append(timed(with_upload))
            uploader.close(finish=True)
        rows.append(("stand-in epoch, checkpoint uploading beside it", statistics.median(alone),
                     statistics.median(beside)))

    print(f"\n| figure (median of {args.repeats}) | file | s3 (moto) | s3 / file |\n|---|---:|---:|---:|")
    for name, file_s, s3_s in rows:
        print(f"| {name} | {file_s * 1000:.1f} ms | {s3_s * 1000:.1f} ms | x{s3_s / file_s:.2f} |")


if __name__ == "__main__":
    main()
