"""A server process's identity, and what proves on its host that it is gone (pure but for
/proc: the test's own processes)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

from orchestra.actors.agents._lease import ServerProcess, owner_gone, this_process
from orchestra.actors.agents._procs import boot_id, start_ticks


def test_this_process_names_host_pid_start_time_and_boot_and_is_new_each_time():
    me = this_process()
    assert (me.pid, me.start_ticks, me.boot_id) == (os.getpid(), start_ticks(os.getpid()), boot_id())
    assert me.process_id.startswith(f"{me.host}:{me.pid}:") and this_process().process_id != me.process_id


def test_an_owner_is_gone_only_when_its_host_can_prove_it():
    here = this_process()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ticks = start_ticks(child.pid)
        assert ticks is not None
        owner = ServerProcess("other", here.host, child.pid, here.boot_id, ticks, 0.0)
        assert not owner_gone(owner, here)  # alive: its pid with its start time
        # the same pid with another start time: a stranger reuses it, the owner is gone
        assert owner_gone(dataclasses.replace(owner, start_ticks=ticks - 1), here)
        assert owner_gone(dataclasses.replace(owner, boot_id="another-boot"), here)  # rebooted since
        assert not owner_gone(dataclasses.replace(owner, host="elsewhere"), here)  # not judged from here
        assert not owner_gone(dataclasses.replace(owner, process_id=here.process_id), here)  # itself
        assert not owner_gone(dataclasses.replace(owner, boot_id=""), here)  # nothing to prove it by
    finally:
        child.kill()
        child.wait()
    assert owner_gone(owner, here)  # ended
