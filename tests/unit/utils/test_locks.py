"""One anonymizer run per output folder: a live holder (another process holding the OS lock) is named
in one line, a dead holder on this host is taken over, one recorded from another host is reported and
left. Reference: a second Python process that really holds ``flock``, and a pid that really exited."""
import json
import socket
import subprocess
import sys

import pytest

from facefd.utils.locks import LOCK_NAME, FolderLockedError, folder_lock

HOLD = """
import fcntl, json, os, socket, sys, time
fh = open(sys.argv[1], "w")
fcntl.flock(fh, fcntl.LOCK_EX)
fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "purpose": "facefd anonymize"})); fh.flush()
print("held", flush=True)
time.sleep(60)
"""


def test_a_live_holder_is_named(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError) as info:
            with folder_lock(tmp_path):
                pass
        message = str(info.value)
        assert "\n" not in message and f"pid {holder.pid} on {socket.gethostname()}" in message
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(tmp_path):  # the OS released the dead holder's lock: taken over
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] != holder.pid


def test_a_dead_holder_on_this_host_is_taken_over(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname()}))
    with folder_lock(tmp_path) as path:
        assert json.loads(path.read_text())["host"] == socket.gethostname()
    assert not path.exists()  # a finished run leaves no lock file


def test_a_holder_on_another_host_is_reported_not_broken(tmp_path):
    record = json.dumps({"pid": 4242, "host": "render-node-7"})
    (tmp_path / LOCK_NAME).write_text(record)
    with pytest.raises(FolderLockedError, match="pid 4242 on render-node-7 \\(another host"):
        with folder_lock(tmp_path):
            pass
    assert (tmp_path / LOCK_NAME).read_text() == record
