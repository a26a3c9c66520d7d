"""Output files: strict JSON (no bare NaN) and the permissions any normal file write would get."""
import json
import os
import stat

import pytest

from facefd.utils.files import write_json, write_text


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_write_json_spells_nan_and_infinity_as_null(tmp_path):
    path = write_json(tmp_path / "r.json", {"auc": float("nan"), "row": [float("inf"), 1.5, -float("inf")],
                                            "nested": {"x": float("nan")}, "n": 3})
    assert _strict(path.read_text()) == {"auc": None, "row": [None, 1.5, None], "nested": {"x": None}, "n": 3}


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_file_names_with_any_bytes_are_written_as_their_bytes(tmp_path):
    """A name read from the disk with bytes that are not UTF-8 (a surrogate escape, as os.fsdecode gives
    it) is written back as the same bytes, not refused with UnicodeEncodeError."""
    import os
    from types import SimpleNamespace

    from facefd.train import _write_bad_image_report

    name = os.fsdecode(b"/data/bad\xff.png")
    _write_bad_image_report(SimpleNamespace(bad_images=[(name, "truncated")], skip_bad_images=True), tmp_path)
    assert (tmp_path / "bad_images.txt").read_bytes() == b"/data/bad\xff.png\ttruncated\n"
