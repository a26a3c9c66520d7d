"""Reading ``manifest.jsonl`` back: the records as json.loads gives them line by line, and every line that is
not a record skipped with a warning naming the file and line (what a run killed mid-write leaves)."""
import json
import logging

import pytest

from facefd.data.manifest import ManifestError, read_manifest, record_path


def test_records_come_back_and_every_other_line_is_named(tmp_path, caplog):
    path = tmp_path / "manifest.jsonl"
    first, second = {"key": "a.png", "status": "anonymized"}, {"key": "b/c.jpg", "status": "no_face", "n": 2}
    third = {"key": "e.png", "status": "anonymized"}
    lines = [json.dumps(first), "", "   ", json.dumps([1, 2]), json.dumps({"status": "x"}), json.dumps(second),
             '{"key": "d.png", "sta', json.dumps(third)]  # a line cut off by a killed run, then the resumed run's
    path.write_text("\n".join(lines))
    with caplog.at_level(logging.WARNING, logger="facefd.data.manifest"):
        assert read_manifest(path) == [first, second, third]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [f"{path}:4 is not a manifest record; skipped", f"{path}:5 is not a manifest record; skipped",
                        f"{path}:7 is not a complete JSON record (a run cut off while writing?); skipped"]
    assert read_manifest(str(path)) == [first, second, third]  # a path given as text


def test_record_path_messages_name_the_key_and_the_folder(tmp_path):
    assert record_path(tmp_path, "a.jpg") == tmp_path / "a.jpg"  # no suffix: the key as it is
    with pytest.raises(ManifestError, match=rf"^manifest key 7 is not a relative path inside {tmp_path}$"):
        record_path(tmp_path, 7)
    (tmp_path / "out").symlink_to(tmp_path.parent)
    with pytest.raises(ManifestError, match=rf"^manifest key 'out/x.png' leads outside {tmp_path} \(through a link\)$"):
        record_path(tmp_path, "out/x.png")
