"""Image folder reading, colour-mode conversion, bad files, labels, splits and seeded sampling."""
import numpy as np
import pytest
import torch
from PIL import Image

from facefd.data import (BadImagesError, FaceImageDataModule, ImageFolderError, MultiCropAugmentation,
                         SAMPLE_ATTRIBUTES, generate_sample_faces, list_images, load_rgb)
from facefd.data.attributes import read_attribute_table
from facefd.data.sampler import SeededEpochSampler


def test_modes_are_converted_to_rgb(tmp_path):
    from facefd.data.images import alpha_mode, set_alpha_mode

    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))  # fully transparent over (10, 20, 30)
    rgba.save(tmp_path / "a.png")
    Image.new("L", (4, 4), 77).save(tmp_path / "g.webp", lossless=True)
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.save(tmp_path / "p.bmp")
    levels = np.array([4, 8, 40000, 65535], dtype=np.uint16).reshape(2, 2)
    Image.fromarray(levels).save(tmp_path / "i16.png")
    # transparency: dropped (pytorch-fid / clean-fid's convert("RGB")) by default, or white on request
    assert alpha_mode() == "drop"
    assert np.asarray(load_rgb(tmp_path / "a.png"))[0, 0].tolist() == [10, 20, 30]
    assert np.asarray(Image.open(tmp_path / "a.png").convert("RGB"))[0, 0].tolist() == [10, 20, 30]  # the peers'
    try:
        set_alpha_mode("white")
        assert np.asarray(load_rgb(tmp_path / "a.png"))[0, 0].tolist() == [255, 255, 255]
    finally:
        set_alpha_mode("drop")
    assert np.asarray(load_rgb(tmp_path / "g.webp"))[0, 0].tolist() == [77, 77, 77]
    assert np.asarray(load_rgb(tmp_path / "p.bmp"))[0, 0].tolist() == [200, 100, 50]
    # 16 bits: scaled by the type's range (x 255 / 65535), never stretched per image
    i16 = np.asarray(load_rgb(tmp_path / "i16.png"))[..., 0]
    assert i16.tolist() == np.round(levels / 65535 * 255).astype(int).tolist() == [[0, 0], [156, 255]]


def test_listing_is_recursive_and_filters_extensions(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for p in ["x.JPG", "sub/y.png", "sub/deeper/z.jpeg", "notes.txt", ".hidden/w.png"]:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (2, 2)).save(tmp_path / p, format="PNG") if p.endswith(("png", "JPG", "jpeg")) else (tmp_path / p).write_text("x")
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["sub/deeper/z.jpeg", "sub/y.png", "x.JPG"]


def test_empty_and_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(ImageFolderError, match="no images"):
        list_images(tmp_path)
    with pytest.raises(ImageFolderError, match="does not exist"):
        list_images(tmp_path / "nope")


def _folder_with_bad_files(tmp_path):
    for i in range(10):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / f"ok{i}.png")
    good = tmp_path / "ok0.png"
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:40])
    (tmp_path / "garbage.jpg").write_bytes(b"not an image at all")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "trunc.jpg", quality=95)
    data = (tmp_path / "trunc.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    return {"truncated.png", "garbage.jpg", "trunc.jpg"}


def test_bad_images_stop_the_run_with_the_list(tmp_path):
    bad = _folder_with_bad_files(tmp_path)
    dm = FaceImageDataModule(str(tmp_path), batch_size=2, num_workers=0, val_fraction=0.2, test_fraction=0.0)
    with pytest.raises(BadImagesError) as err:
        dm.setup()
    assert {p.split("/")[-1] for p, _ in err.value.bad} == bad
    assert "skip_bad_images=true" in str(err.value) and "garbage.jpg" in str(err.value)


def test_bad_images_are_skipped_when_asked(tmp_path):
    bad = _folder_with_bad_files(tmp_path)
    dm = FaceImageDataModule(str(tmp_path), batch_size=2, num_workers=0, skip_bad_images=True,
                             val_fraction=0.2, test_fraction=0.0, eval_transform=lambda im: torch.zeros(1))
    dm.setup()
    assert len(dm.bad_images) == 3
    kept = {p.name for split in dm.splits.values() for p in split}
    assert len(kept) == 10 and not kept & bad


def test_celeba_labels_and_partition(sample_root):
    dm = FaceImageDataModule(str(sample_root), batch_size=4, num_workers=0)
    dm.setup()
    assert dm.attribute_names == list(SAMPLE_ATTRIBUTES)
    # list_eval_partition of the sample set: 80/10/10 % of the 24 drawn people (5 views each)
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [95, 10, 15]
    table = read_attribute_table(sample_root / "list_attr_celeba.txt")
    path = dm.splits["val"][3]
    row = table.values[table.lookup(path.name)]
    assert torch.equal(dm.labels["val"][3], torch.tensor(row, dtype=torch.float32))
    # exactly one hair colour per face, as drawn
    hair = [dm.attribute_names.index(h) for h in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")]
    assert torch.all(dm.labels["train"][:, hair].sum(1) == 1)


def test_csv_attributes_and_seeded_split(tmp_path):
    for i in range(20):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    (tmp_path / "attrs.csv").write_text("image_id,Male\n" + "".join(f"{i}.png,{i % 2}\n" for i in range(20)))
    kw = dict(attributes_file="attrs.csv", partition_file=None, val_fraction=0.25, test_fraction=0.25,
              batch_size=2, num_workers=0, seed=3)
    a, b = FaceImageDataModule(str(tmp_path), **kw), FaceImageDataModule(str(tmp_path), **kw)
    a.setup(), b.setup()
    assert [len(a.splits[s]) for s in ("train", "val", "test")] == [10, 5, 5]
    assert a.splits == b.splits
    for split in ("train", "val"):
        want = [int(p.stem) % 2 for p in a.splits[split]]
        assert a.labels[split][:, 0].tolist() == want


def test_sample_set_is_deterministic(tmp_path):
    a = generate_sample_faces(tmp_path / "a", num_images=6, image_size=32, seed=5, progress=False)
    b = generate_sample_faces(tmp_path / "b", num_images=6, image_size=32, seed=5, progress=False)
    for name in ["images/000000.png", "images/000005.png", "list_attr_celeba.txt"]:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    with pytest.raises(FileExistsError, match="other settings"):
        generate_sample_faces(tmp_path / "a", num_images=7, image_size=32, seed=5, progress=False)


def test_augmentation_is_a_function_of_seed_epoch_index(sample_root):
    aug = MultiCropAugmentation(local_crops_number=2, global_crop_size=32, local_crop_size=16)
    dm = FaceImageDataModule(str(sample_root), batch_size=4, num_workers=0, train_transform=aug)
    dm.setup()
    ds = dm.datasets["train"]
    torch.manual_seed(123)
    first = ds[(5, 2)]["crops"]
    torch.manual_seed(999)  # global RNG state must not matter
    again = ds[(5, 2)]["crops"]
    other_epoch = ds[(5, 3)]["crops"]
    assert len(first) == 4 and first[0].shape == (3, 32, 32) and first[2].shape == (3, 16, 16)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not torch.equal(first[0], other_epoch[0])


def test_sampler_shuffles_per_epoch_and_shards():
    data = list(range(10))
    s = SeededEpochSampler(data, seed=1)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert sorted(i for i, _ in e0) == data and {e for _, e in e0} == {0} and {e for _, e in e1} == {1}
    assert [i for i, _ in e0] != [i for i, _ in e1]


def test_sampler_shards_between_processes(monkeypatch):
    """Under DDP (2 processes, faked through torch.distributed's probes) each rank gets its own half of the
    epoch's permutation — torch.randperm(N) seeded with seed + epoch, rank r taking every 2nd index from r, as
    torch's DistributedSampler documents — disjoint, together every index once, each tagged with its epoch."""
    import torch
    import torch.distributed as dist

    data = list(range(10))
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)
    for epoch in (0, 3):
        perm = torch.randperm(10, generator=torch.Generator().manual_seed(1 + epoch)).tolist()
        shards = []
        for rank in (0, 1):
            monkeypatch.setattr(dist, "get_rank", lambda *a, r=rank: r)
            sampler = SeededEpochSampler(data, seed=1)
            sampler.set_epoch(epoch)
            pairs = list(sampler)
            assert {e for _, e in pairs} == {epoch} and len(sampler) == 5
            shards.append([i for i, _ in pairs])
            assert shards[-1] == perm[rank::2]
        assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == data


def test_sample_set_has_people_with_several_views(sample_root):
    """identity_CelebA.txt: 5 consecutive views per person; what belongs to the person (sex, age, hair,
    skin, facial hair, fringe) is the same in every view, expression and hat vary; no person is in two splits."""
    table = read_attribute_table(sample_root / "list_attr_celeba.txt")
    person = dict(line.split() for line in (sample_root / "identity_CelebA.txt").read_text().splitlines())
    part = dict(line.split() for line in (sample_root / "list_eval_partition.txt").read_text().splitlines())
    assert len(person) == 120 and sorted(person) == sorted(table.keys)
    views: dict[str, list[str]] = {}
    for name in sorted(person):
        views.setdefault(person[name], []).append(name)
    assert len(views) == 24 and all(len(v) == 5 for v in views.values())
    stable = [table.names.index(n) for n in ("Male", "Young", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair",
                                             "Pale_Skin", "Mustache", "No_Beard", "Bangs")]
    smiling = table.names.index("Smiling")
    varies = 0
    for names in views.values():
        rows = table.values[[table.lookup(n) for n in names]]
        assert (rows[:, stable] == rows[0, stable]).all()
        varies += len(set(rows[:, smiling])) > 1
        assert len({part[n] for n in names}) == 1  # a person's views stay in one split
    assert varies >= 12  # smiling in some views, not in others, for most people
    # facial hair only on men, as in CelebA
    male, beard = table.names.index("Male"), table.names.index("No_Beard")
    assert np.all(table.values[table.values[:, male] == 0][:, beard] == 1)


def test_small_crops_get_a_proportionally_smaller_blur():
    aug = MultiCropAugmentation(global_crop_size=64, local_crop_size=32, scale_blur=True)
    blur_global, blur_local = aug.global_transfo1.transforms[2], aug.local_transfo.transforms[2]
    assert (blur_global.radius_min, blur_global.radius_max) == pytest.approx((0.1 * 64 / 224, 2.0 * 64 / 224))
    assert (blur_local.radius_min, blur_local.radius_max) == pytest.approx((0.1 * 32 / 96, 2.0 * 32 / 96))
    reference = MultiCropAugmentation()
    assert reference.global_transfo1.transforms[2].radius_max == 2.0 and reference.local_transfo.transforms[2].p == 0.5


def test_clutter_backgrounds_differ_across_a_photo_and_keep_plain_sets_valid(tmp_path):
    import json

    from facefd.data.sample_faces import draw_face, sample_identity, sample_view

    rng = np.random.default_rng(0)
    person = sample_identity(rng)
    view = sample_view(person, rng, "clutter")
    assert len(view["clutter"]) == 8 and all(-0.1 <= b[0] < b[2] <= 1.1 for _, b, _ in view["clutter"])
    img = np.asarray(draw_face(person, view, np.random.default_rng(1), 64)).astype(float)
    # corners (background only) differ from each other much more than under a plain background
    corners = [img[:8, :8].mean((0, 1)), img[:8, -8:].mean((0, 1)), img[-8:, :8].mean((0, 1))]
    plain = np.asarray(draw_face(person, {**view, "clutter": []}, np.random.default_rng(1), 64)).astype(float)
    plain_corners = [plain[:8, :8].mean((0, 1)), plain[:8, -8:].mean((0, 1))]
    assert np.abs(corners[0] - corners[1]).sum() + np.abs(corners[0] - corners[2]).sum() > 30
    assert np.abs(plain_corners[0] - plain_corners[1]).sum() < 15
    root = generate_sample_faces(tmp_path / "c", num_images=10, image_size=32, progress=False, background="clutter")
    assert json.loads((root / "facefd_sample.json").read_text())["background"] == "clutter"
    plain_root = generate_sample_faces(tmp_path / "p", num_images=10, image_size=32, progress=False)
    assert "background" not in json.loads((plain_root / "facefd_sample.json").read_text())  # v2 sets still match
    with pytest.raises(ValueError, match="background"):
        generate_sample_faces(tmp_path / "x", num_images=10, background="stripes")


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (6, 4), (0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "r.png", exif=exif)  # lossless, so the pixel is exact
    img.save(tmp_path / "plain.png")
    rotated = load_rgb(tmp_path / "r.png")
    assert rotated.size == (4, 6) and load_rgb(tmp_path / "plain.png").size == (6, 4)
    assert np.asarray(rotated)[0, -1].tolist() == [255, 0, 0]  # the red corner moved to the top right


def test_a_folder_smaller_than_one_batch_is_a_user_error(tmp_path, sample_root):
    """One line naming the folder and the largest batch that fits (the training split of 120 images)."""
    from conftest import compose_train
    from facefd.train import run
    from facefd.utils.errors import ConfigError

    cfg = compose_train(tmp_path, ["data.batch_size=500", "callbacks.knn_probe=null"], sample_root)
    with pytest.raises(ConfigError, match=r"cannot fill one batch of 500 per device; lower data.batch_size \(at most \d+\)"):
        run(cfg)
