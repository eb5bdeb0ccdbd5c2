"""Which holder's lease a pool process may take over at once: only its own node's dead ones."""

from __future__ import annotations

import os
import subprocess
import sys

from worker.leases import dead_sibling, process_alive

NODE = "dcl-123@host"


def test_a_dead_process_of_the_same_node_is_taken_over():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # exited and reaped: its pid names no process now
    me = f"{NODE}/{os.getpid()}"
    assert not process_alive(child.pid)
    assert dead_sibling(f"{NODE}/{child.pid}", me) == f"{NODE}/{child.pid}"


def test_a_zombie_counts_as_dead():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
        assert not process_alive(child.pid)
    finally:
        child.wait()


def test_a_live_sibling_another_node_or_a_plain_name_keeps_its_lease():
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as live:
        try:
            me = f"{NODE}/{os.getpid()}"
            assert dead_sibling(f"{NODE}/{live.pid}", me) is None  # still running
        finally:
            live.kill()
    assert dead_sibling(f"dcl-999@other/{live.pid}", f"{NODE}/{os.getpid()}") is None  # not ours to judge
    assert dead_sibling("w1", "w2") is None
    assert dead_sibling(None, f"{NODE}/1") is None


def test_our_own_pid_held_by_an_earlier_process_is_dead():
    me = f"{NODE}/{os.getpid()}"
    assert dead_sibling(me, me) == me  # a fresh process given the dead one's pid
