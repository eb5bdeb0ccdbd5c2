"""Whose lease may be taken over at once: a dead process of this very worker.

A job is held by `NODE/PID` (worker/tasks.py `worker_name`): the Celery node name (unique to
one worker's main process, which names its host) and the pool process that runs the job.
When that process is SIGKILLed (out of memory, an operator), Celery hands the message back
and a fresh pool process of the same node receives it within a second or two; the dead
process's lease would otherwise stay valid for up to `DCL_LEASE_SECONDS` and the job would
show `running` with frozen progress until the reconciler requeued it. A process of the same
node can see that its sibling is gone, so it takes the job over right away; and the worker's
main process (its reconciler pass) ends such leases too, whoever receives the message.

This relies on node names being unique across the workers sharing a job store (Celery relies
on it too): the default `dcl-PID@HOST` is; two workers given the same `--name` are not.
"""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """Whether `pid` runs on this machine (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: trust the signal check
    return state not in (b"Z", b"X")


def dead_sibling(holder: str | None, me: str) -> str | None:
    """`holder` when it is a process of the same worker node as `me` that is no longer
    running, else None (another node's process, or one still alive, keeps its lease)."""
    if not holder:
        return None
    node, _, pid = holder.rpartition("/")
    my_node, _, my_pid = me.rpartition("/")
    if not node or node != my_node or not pid.isdigit():
        return None
    # The same pid as ours: the holder was an earlier process whose pid we were given.
    if pid == my_pid or not process_alive(int(pid)):
        return holder
    return None


def release_dead_children(plane, node: str) -> list[str]:
    """End the leases of running jobs held by processes of `node` (this worker) that have died,
    so that the reconciler requeues them now rather than when their leases run out (the
    redelivered message may have gone to another worker, which cannot see the death).
    Returns the job ids."""
    from service.control.lifecycle import Refused

    released = []
    for job in plane.jobs.running_held_by(f"{node}/"):
        pid = job.worker.rpartition("/")[2]
        if pid.isdigit() and not process_alive(int(pid)):
            try:
                plane.lifecycle.expire_lease(job.id, job.worker)
                released.append(job.id)
            except Refused:
                pass
    return released
