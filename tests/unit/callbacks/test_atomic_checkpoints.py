"""A full disk while a checkpoint is written leaves the previous checkpoint whole and no partial file,
and the command line says so in one line naming the file. Reference: ``torch.load`` of what is on disk."""
import errno

import pytest
import torch

from facefd.callbacks.checkpoint_io import AtomicCheckpointIO
from facefd.utils.entry import report_user_errors


class FullDisk:
    """A file object whose writes stop after ``room`` bytes with ENOSPC, as a full disk does."""

    def __init__(self, real, room):
        self.real, self.room = real, room

    def write(self, data):
        if len(data) > self.room:
            self.real.write(bytes(data[:self.room]))
            raise OSError(errno.ENOSPC, "No space left on device", self.real.name)
        self.room -= len(data)
        return self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def test_a_full_disk_leaves_the_last_checkpoint_whole(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, target)
    import facefd.callbacks.checkpoint_io as module

    real_fdopen = module.os.fdopen
    monkeypatch.setattr(module.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode), room=100))
    with pytest.raises(OSError) as info:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "epoch": 2}, target)
    assert info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # no partial file
    assert torch.load(target, weights_only=True)["epoch"] == 1  # the previous checkpoint, whole


def test_a_full_disk_is_one_error_line_naming_the_file(capsys):
    @report_user_errors
    def job():
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoints/epoch_000.ckpt")

    with pytest.raises(SystemExit) as info:
        job()
    assert info.value.code == 1
    assert capsys.readouterr().err == "error: /runs/x/checkpoints/epoch_000.ckpt: No space left on device\n"
