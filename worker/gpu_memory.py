"""Room on the GPU for one more job, checked in the job's own process before it starts.

With `DCL_JOBS_PER_GPU` > 1 several jobs share one GPU. A job that starts when the others
have taken the memory would die of CUDA out-of-memory mid-run; checking the free memory
first (`torch.cuda.mem_get_info`, which sees every process on the device) lets it wait in
the queue instead. A GPU too small for the floor even when empty fails the job with a
message that says so.
"""

from __future__ import annotations

MiB = 1024**2

FITS, WAIT, NEVER = "fits", "wait", "never"


def free_memory(device: str) -> tuple[int, int] | None:
    """(free, total) bytes of the CUDA device `device` (`auto`, `cuda`, `cuda:N`); None when
    there is none."""
    import torch

    if not torch.cuda.is_available():
        return None  # `auto` runs on the CPU; an explicit `cuda` fails later with its own message
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        return None
    return torch.cuda.mem_get_info(index)


def room_for_job(free: int, total: int, floor: int) -> str:
    """FITS when `floor` bytes are free, WAIT when other jobs hold what it needs, NEVER when
    the device is smaller than the floor."""
    if free >= floor:
        return FITS
    return NEVER if total < floor else WAIT


def check(device: str, floor_mib: int) -> tuple[str, str]:
    """(verdict, what to tell the user) for a job about to start on `device` (`auto`, `cpu`,
    `cuda`, `cuda:N`, `mps`)."""
    device = str(device)
    if device in ("cpu", "mps") or floor_mib <= 0:
        return FITS, ""
    memory = free_memory(device)
    if memory is None:
        return FITS, ""
    free, total = memory
    verdict = room_for_job(free, total, floor_mib * MiB)
    if verdict == NEVER:
        return verdict, (f"the GPU ({device}) has {total // MiB} MiB in all, less than the {floor_mib} MiB a job "
                         "is given to start (DCL_GPU_JOB_MIN_FREE_MIB); lower that setting or run the job on a "
                         "larger GPU")
    return verdict, f"{free // MiB} MiB free on {device}, {floor_mib} MiB needed"
