"""Resume: which images a re-run redoes, against the files on disk and hashlib's digests of them. A stand-in
generator (grey faces) and detector keep each run to milliseconds; the Stable Diffusion flow is tested in
test_anonymize.py."""
import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from facefd.anonymize import Anonymizer
from facefd.anonymize.anonymizer import OutputNameClashError, output_intact, save_clean, seed_for
from facefd.models.faces import Box


class Grey:
    def __call__(self, positives, negatives, seeds):
        return [Image.new("RGB", (32, 32), (128, 128, 128)) for _ in positives]


def _detector(image):
    """A face filling the image, except in images whose top-left pixel is pure white (no face)."""
    return [] if image.getpixel((0, 0)) == (255, 255, 255) else [Box(0, 0, image.width, image.height)]


def _anonymizer(**kw):
    return Anonymizer(Grey(), lambda face: {"Male": 0.9}, _detector, residual_detector=lambda im: [], **kw)


def _photos(folder, n=3, blank=("blank.png",)):
    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.full((24, 24, 3), 30 * i + 10, np.uint8)).save(folder / f"{i}.png")
    for name in blank:
        Image.new("RGB", (24, 24), (255, 255, 255)).save(folder / name)
    return folder


def _records(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]


def test_seed_is_31_bits_of_sha256_of_the_run_seed_and_key():
    for run_seed, key in ((0, "a.png#0"), (7, "dir/b.jpg#1"), (3, "bad\udcff.png#0")):
        digest = hashlib.sha256(f"{run_seed}:{key}".encode("utf-8", "surrogateescape")).digest()
        assert seed_for(run_seed, key) == int.from_bytes(digest[:4], "little") % 2 ** 31


def test_saved_outputs_hold_pixels_only_and_their_digest(tmp_path):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8))
    img.info["icc_profile"] = b"not a real profile"
    exif = Image.Exif()
    exif[0x010F] = "camera maker"
    img.info["exif"] = exif.tobytes()
    for name, fmt, kw in (("a.png", "PNG", {}), ("b.jpg", "JPEG", {"quality": 95})):
        written = save_clean(img, tmp_path / name)
        data = (tmp_path / name).read_bytes()
        assert written == {"output_size": len(data), "output_sha256": hashlib.sha256(data).hexdigest()}
        back = Image.open(tmp_path / name)
        assert back.format == fmt and "exif" not in back.info and "icc_profile" not in back.info
        expect = io.BytesIO()
        Image.frombytes("RGB", img.size, img.tobytes()).save(expect, format=fmt, **kw)
        assert data == expect.getvalue()  # PIL's own encoding of the bare pixels (JPEG at quality 95)


def test_an_output_is_intact_only_with_its_size_and_digest(tmp_path):
    path = tmp_path / "o.png"
    path.write_bytes(b"0123456789")
    rec = {"output": str(path), "output_size": 10, "output_sha256": hashlib.sha256(b"0123456789").hexdigest()}
    assert output_intact(rec)
    assert not output_intact({**rec, "output": None}) and not output_intact({**rec, "output": str(tmp_path / "x")})
    assert not output_intact({**rec, "output_size": 11})
    path.write_bytes(b"0123456780")  # same size, other content
    assert not output_intact(rec)


def test_a_rerun_redoes_exactly_the_images_whose_output_is_gone_or_changed(tmp_path, caplog):
    src, out = _photos(tmp_path / "in"), tmp_path / "out"
    first = _anonymizer(mode="paste").run(src, out, progress=False)
    assert (first["anonymized"], first["no_face"], first["skipped"]) == (3, 1, 0)
    assert _anonymizer(mode="paste").run(src, out, progress=False)["skipped"] == 4  # nothing to do
    (out / "0.png").unlink()  # gone
    data = bytearray((out / "1.png").read_bytes())
    data[-20] ^= 1
    (out / "1.png").write_bytes(bytes(data))  # same size, changed
    again = _anonymizer(mode="paste").run(src, out, progress=False)
    assert (again["anonymized"], again["skipped"]) == (2, 2)
    redone = [r["key"] for r in _records(out)[4:]]
    assert sorted(redone) == ["0.png", "1.png"]
    # a no-face image is done for the same on_no_face only: blur instead of skip redoes it, and writes it
    blurred = _anonymizer(mode="paste", on_no_face="blur").run(src, out, progress=False)
    assert (blurred["no_face"], blurred["skipped"]) == (1, 3) and (out / "blank.png").is_file()
    assert _anonymizer(mode="paste", on_no_face="blur").run(src, out, progress=False)["skipped"] == 4
    (out / "blank.png").unlink()  # a written no-face output is checked like any other
    assert _anonymizer(mode="paste", on_no_face="blur").run(src, out, progress=False)["no_face"] == 1


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_a_record_naming_another_output_is_redone(tmp_path, caplog):
    """The first image's record names an intact copy outside the output folder: that image is redone, with one
    warning written out here in full, and the second image's record, read after it, still counts as done."""
    src, out = _photos(tmp_path / "in", n=2, blank=()), tmp_path / "out"
    _anonymizer(mode="paste").run(src, out, progress=False)
    first, second = _records(out)
    assert (first["key"], second["key"]) == ("0.png", "1.png")
    moved = tmp_path / "copy.png"
    moved.write_bytes((out / "0.png").read_bytes())
    (out / "manifest.jsonl").write_text(json.dumps({**first, "output": str(moved)}) + "\n" + json.dumps(second) + "\n")
    caplog.clear()
    again = _anonymizer(mode="paste").run(src, out, progress=False)
    assert (again["anonymized"], again["skipped"]) == (1, 1)
    assert _warnings(caplog) == [f"{out / 'manifest.jsonl'}: the record of '0.png' names output {moved}, not "
                                 f"{out / '0.png'}; redone"]


def test_inputs_that_would_share_an_output_are_refused_before_any_work(tmp_path):
    src = _photos(tmp_path / "in", n=0, blank=("x.jpg", "x.png"))
    (src / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(src / "sub" / "Y.png")
    Image.new("RGB", (8, 8)).save(src / "sub" / "y.bmp")
    Image.new("RGB", (8, 8)).save(src / "alone.png")
    out = tmp_path / "out"
    with pytest.raises(OutputNameClashError) as info:
        _anonymizer(mode="paste").run(src, out, progress=False)
    out_dir = out.resolve()  # names differing in case only clash too; alone.png does not
    assert str(info.value) == (
        f"2 output name clash(es) under {out_dir}: sub/Y.png and sub/y.bmp -> {out_dir / 'sub' / 'y.png'}; "
        f"x.jpg and x.png -> {out_dir / 'x.png'}; rename the inputs or set output_format=same (each output keeps "
        "its input's name and format)")
    assert not out.exists() or not any(out.iterdir())  # refused before any work
    same = _anonymizer(mode="paste", output_format="same").run(src, out, progress=False)
    assert (same["anonymized"], same["no_face"]) == (3, 2)  # each output keeps its input's name: no clash


def test_resume_reads_past_records_it_ignores_and_renamed_outputs(tmp_path, caplog):
    """A JPEG input written as PNG is done on the re-run; a record that leaves the folder or names another
    output is passed over (with a warning naming it), and the records after it still count; residual-face
    records are done only while on_no_face is skip."""
    src, out = _photos(tmp_path / "in", n=2, blank=()), tmp_path / "out"
    Image.new("RGB", (24, 24), (90, 60, 30)).save(src / "c.jpg")
    assert _anonymizer(mode="paste").run(src, out, progress=False)["anonymized"] == 3
    good = (out / "manifest.jsonl").read_text()
    bad = [json.dumps({"key": "../escape.png", "status": "anonymized", "output": str(tmp_path / "escape.png")}),
           json.dumps({**_records(out)[0], "output": str(tmp_path / "elsewhere.png")})]
    (out / "manifest.jsonl").write_text(bad[0] + "\n" + bad[1] + "\n" + good)
    caplog.clear()
    again = _anonymizer(mode="paste").run(src, out, progress=False)
    assert again["skipped"] == 3 and again["anonymized"] == 0
    assert _warnings(caplog) == [f"{out / 'manifest.jsonl'}: manifest key '../escape.png' is not a relative path "
                                 f"inside {out}; the record is ignored"]

    right_half = lambda im: [Box(16, 8, 24, 16)]  # noqa: E731 - the face replaced, on the right
    corner = lambda im: [Box(0, 0, 3, 3)]  # noqa: E731 - a face found afterwards where none was generated
    residual = Anonymizer(Grey(), lambda face: {"Male": 0.9}, right_half, mode="paste", margin=0.0,
                          residual_detector=corner)
    out2 = tmp_path / "out2"
    assert residual.run(src, out2, progress=False)["residual_face"] == 3
    assert residual.run(src, out2, progress=False)["skipped"] == 3
    blur = Anonymizer(Grey(), lambda face: {"Male": 0.9}, right_half, mode="paste", margin=0.0, on_no_face="blur",
                      residual_detector=corner)
    assert blur.run(src, out2, progress=False)["skipped"] == 0


def test_clash_messages_list_five_and_same_format_needs_no_hint(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        for ext in ("jpg", "png"):
            Image.new("RGB", (8, 8)).save(src / f"{i}.{ext}")
    with pytest.raises(OutputNameClashError) as info:
        _anonymizer(mode="paste").run(src, tmp_path / "out", progress=False)
    assert str(info.value).count(" -> ") == 5 and str(info.value).startswith("6 output name clash(es)")
    shouty = tmp_path / "shouty"
    shouty.mkdir()
    for name in ("A.PNG", "a.png"):
        Image.new("RGB", (8, 8)).save(shouty / name)
    with pytest.raises(OutputNameClashError) as info:
        _anonymizer(mode="paste", output_format="same").run(shouty, tmp_path / "out3", progress=False)
    assert str(info.value).endswith(".png")  # no output_format hint: "same" is already chosen


def test_an_unknown_extension_is_saved_as_png(tmp_path):
    img = Image.new("RGB", (8, 8), (1, 2, 3))
    save_clean(img, tmp_path / "a.tif")
    assert Image.open(tmp_path / "a.tif").format == "PNG"
