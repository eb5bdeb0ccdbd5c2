"""Where a pretrain run keeps its resumable state in its run folder (torch-free, so a worker's
storage code can name them without importing the loop)."""

from pathlib import Path

CHECKPOINT = Path("checkpoints") / "last.pt"
METRICS = "metrics.jsonl"
