"""PyTorch threads follow a container's CPU quota (cgroup v1 and v2), not the host's CPU count."""
import torch

from facefd.utils.threads import cpu_quota, limit_threads_to_cpu_quota


def test_cpu_quota_from_cgroup_files(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cpu_quota(v2) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(v2) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(v1) == 2.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(v1) is None
    assert cpu_quota(tmp_path / "missing") is None


def test_threads_are_lowered_to_the_quota_unless_the_user_chose(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # one CPU's worth of time
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert limit_threads_to_cpu_quota(tmp_path) == 2  # the user's explicit choice wins
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert limit_threads_to_cpu_quota(tmp_path) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
