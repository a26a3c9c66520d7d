"""``facefd score``: every score from one extraction per folder, each equal to its reference computed by the
peers' own code on the peers' own features (torch-fidelity's Inception, ``kid_features_to_metric`` and
``isc_features_to_metric``; scipy's FID formula; PRDC and dgm-eval's authenticity written out in numpy)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from references import brute_prdc, dgm_eval_authpct, scipy_reference

tfi = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")


def noise_folder(path, n, seed, smooth):
    path.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = rng.integers(0, 256, (smooth, smooth, 3), dtype=np.uint8)
        Image.fromarray(small).resize((299, 299), Image.BICUBIC).save(path / f"{i:02d}.png")
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    return noise_folder(root / "real", 12, 0, 8), noise_folder(root / "fake", 12, 1, 5)


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory):
    """The FID Inception with random weights whose batch-norm statistics were measured on noise images (one
    pass in training mode), so that features and logits vary at unit scale as a trained network's do."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        torch.manual_seed(0)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a cumulative average: one pass sets the statistics
    net.train()
    with torch.no_grad():
        net(torch.randint(0, 256, (16, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        net.fc.weight.mul_(0.05)  # class probabilities that differ between images without saturating
    path = tmp_path_factory.mktemp("fid") / "calibrated_random_inception.pth"
    torch.save(net.state_dict(), path)
    return path


def peer_features(weights, folder):
    """Pool features and logits from torch-fidelity's own network, on the uint8 images as it reads them."""
    state = torch.load(weights, weights_only=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: state)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"]).eval()
    files = sorted(folder.iterdir())
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files])
    with torch.no_grad():
        pool, logits = net(x)
    return pool.double(), logits.double()


def test_every_score_from_one_extraction_equals_the_peers(folders, fid_weights, tmp_path, monkeypatch, capsys):
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    import facefd.models.probe.features as features_module
    from facefd.cli import score_main

    real, fake = folders
    calls = []
    extract = features_module.extract_features
    monkeypatch.setattr(features_module, "extract_features", lambda *a, **k: calls.append(k["desc"]) or extract(*a, **k))
    out = tmp_path / "scores.json"
    args = [str(real), str(fake), "--metrics", "fid,kid,prdc,authpct,is", "--weights", f"inception={fid_weights}",
            "--json", str(out), "--cache-dir", str(tmp_path / "cache"), "--batch-size", "8"]
    document = score_main(args)
    assert len(calls) == 2  # one Inception pass per folder for all five scores
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["FID", "KID", "PRDC", "AuthPct", "IS"]
    assert all("inception" in line for line in lines)  # every line names its features

    pr, lr = peer_features(fid_weights, real)
    pf, lf = peer_features(fid_weights, fake)
    scores = json.loads(out.read_text())["scores"]
    assert scores == json.loads(json.dumps(document["scores"]))
    mu = lambda x: x.mean(0).numpy()  # noqa: E731
    cov = lambda x: np.cov(x.numpy(), rowvar=False)  # noqa: E731
    want_fid = scipy_reference(mu(pr), cov(pr), mu(pf), cov(pf))
    assert scores["fid"]["value"] == pytest.approx(want_fid, rel=1e-4)
    # KID on subsets as large as the sets, drawn without replacement: every subset is the whole set, so both
    # tools compute the full-set unbiased estimate
    n = min(len(pr), len(pf))
    kid = kid_features_to_metric(pr, pf, kid_subsets=5, kid_subset_size=n, kid_degree=3,
                                 kid_gamma=None, kid_coef0=1, rng_seed=0, verbose=False)
    assert scores["kid"]["subset_size"] == n
    want_prdc = brute_prdc(pr.numpy(), pf.numpy(), 5)
    assert scores["prdc"]["value"] == pytest.approx(want_prdc, abs=1e-12)
    assert scores["authpct"]["value"] == pytest.approx(dgm_eval_authpct(pr.numpy(), pf.numpy()))
    isc = isc_features_to_metric(lf.float(), splits=10, shuffle=True, rng_seed=2020)
    assert scores["is"]["value"] == pytest.approx(isc["inception_score_mean"], rel=1e-5)
    assert scores["is"]["std"] == pytest.approx(isc["inception_score_std"], rel=1e-4, abs=1e-7)
    # the two networks' features agree to float32 rounding (facefd runs the convolutions channels-last), and the
    # cubic kernel of features ~70 in size triples that relative difference: 1e-5
    assert scores["kid"]["value"] == pytest.approx(kid["kernel_inception_distance_mean"], rel=1e-5)
    assert scores["kid"]["std"] < 1e-9 * scores["kid"]["value"]  # every subset is the same full set (summed in another order)

    # the record: counts, the sample, the extractor's fingerprint and the library versions
    assert document["counts"] == {"a": 12, "b": 12}
    assert document["sample"]["a"][:2] == ["00.png", "01.png"] and len(document["sample"]["b"]) == 12
    assert document["extractors"][0]["fingerprint"] == scores["fid"]["fingerprint"]
    assert {"torch", "numpy", "facefd"} <= set(document["versions"])

    # a second run reads every feature from the cache: nothing is extracted again
    monkeypatch.setattr(features_module, "extract_features", lambda *a, **k: pytest.fail("extracted again"))
    again = score_main(args[:6] + ["--cache-dir", str(tmp_path / "cache"), "--metrics", "fid,prdc"])
    assert again["scores"]["fid"]["value"] == scores["fid"]["value"]


def test_statistics_files_where_statistics_suffice(folders, fid_weights, tmp_path, capsys):
    from facefd.cli import fid_main, score_main

    real, fake = folders
    weights = ["--weights", f"inception={fid_weights}"]
    stats = tmp_path / "real.npz"
    fid_main([*weights, "--save-stats", str(real), str(stats)])
    capsys.readouterr()
    common = [*weights, "--cache-dir", str(tmp_path / "cache")]
    from_folder = score_main([str(real), str(fake), *common])["scores"]["fid"]["value"]
    from_stats = score_main([str(stats), str(fake), *common])["scores"]["fid"]["value"]
    assert from_stats == pytest.approx(from_folder, rel=1e-9)
    with pytest.raises(SystemExit):
        score_main([str(stats), str(fake), *common, "--metrics", "fid,kid"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and str(stats) in err[-1] and "kid" in err[-1]


@pytest.mark.parametrize("metrics, message", [
    ("fid,bogus", "unknown score 'bogus'"),
    ("fd", "needs an extractor"),
    ("is/random:test_resnet", "Inception's class logits"),
    ("kid/random:resnet-18", "not a timm model"),
])
def test_metrics_list_errors_are_one_line_before_any_work(metrics, message, folders, tmp_path, capsys):
    from facefd.cli import score_main

    real, fake = folders
    with pytest.raises(SystemExit):
        score_main([str(real), str(fake), "--metrics", metrics, "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not (tmp_path / "cache").exists()


def test_any_score_on_any_extractor_and_a_seeded_sample(folders, tmp_path, capsys):
    """kid/random:test_resnet: KID on timm's test network (random weights); --num-samples draws a seeded
    sample, recorded, and another seed draws another."""
    from facefd.cli import score_main

    real, fake = folders
    common = [str(real), str(fake), "--metrics", "kid/random:test_resnet,fd/random:test_resnet,fd_inf/random:test_resnet",
              "--num-samples", "10", "--cache-dir", str(tmp_path / "cache"), "--ci", "0.9", "--n-boot", "20"]
    first = score_main([*common, "--seed", "1"])
    second = score_main([*common, "--seed", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("KID:") and "random:test_resnet" in lines[0]
    assert set(first["scores"]) == {"kid/random:test_resnet", "fd/random:test_resnet", "fd_inf/random:test_resnet"}
    low, high = first["scores"]["fd/random:test_resnet"]["interval"]
    assert 0 <= low < high and first["ci"] == 0.9 and "90% CI" in lines[1]
    assert len(first["sample"]["a"]) == 10 and first["counts"] == {"a": 10, "b": 10}
    assert first["sample"]["a"] != second["sample"]["a"]


def test_fd_dinov2_and_cmmd_on_small_models_of_their_architectures(folders, tmp_path, capsys):
    """fd_dinov2 and cmmd through the command, on a small DINOv2-architecture ViT and a small CLIP saved by the
    test: FD equals scipy's formula on the extractor's own features, CMMD the reference's all-pairs kernel."""
    import timm
    import transformers
    from safetensors.torch import save_file

    from facefd.cli import score_main
    from facefd.data import list_images
    from facefd.data.tensors import ImageTensors
    from facefd.metrics.foundation import CLIPImageEmbedder, DINOv2Features
    from references import reference_cmmd

    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=70, depth=1,
                            embed_dim=64, num_heads=1)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "dinov2.safetensors"))
    config = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=336, patch_size=48, projection_dim=16)
    transformers.CLIPVisionModelWithProjection(config).save_pretrained(tmp_path / "clip", safe_serialization=True)
    real, fake = folders
    metrics = f"fd_dinov2/dinov2@{tmp_path / 'dinov2.safetensors'},cmmd/clip@{tmp_path / 'clip'}"
    document = score_main([str(real), str(fake), "--metrics", metrics, "--cache-dir", str(tmp_path / "cache")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("FD_DINOv2:") and lines[1].startswith("CMMD:")

    def features(extractor, folder):
        data = ImageTensors(list_images(folder), None)
        return torch.cat([extractor(data[i][None]) for i in range(len(data))]).double().numpy()

    dino = DINOv2Features(tmp_path / "dinov2.safetensors")
    fa, fb = features(dino, real), features(dino, fake)
    want = scipy_reference(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    scores = document["scores"]
    (fd_key,) = [k for k in scores if k.startswith("fd_dinov2")]
    (cmmd_key,) = [k for k in scores if k.startswith("cmmd")]
    assert scores[fd_key]["value"] == pytest.approx(want, rel=1e-4)
    clip = CLIPImageEmbedder(str(tmp_path / "clip"))
    ea, eb = features(clip, real), features(clip, fake)
    assert scores[cmmd_key]["value"] == pytest.approx(reference_cmmd(ea, eb), rel=1e-6)


def test_identity_leak_finds_another_photo_of_a_reference_person_on_real_photos(tmp_path, capsys):
    """Reference: astronaut() and a picture without a face. Generated: three altered copies of astronaut()
    (mirrored, darker, a JPEG at quality 40), four LFW faces (other people; the subset has no identity labels,
    so they are compared with astronaut() only) and a picture with no face. The copies leak, the other people
    do not; pictures without a face are counted apart; the closest pairs are drawn."""
    import io

    from PIL import ImageEnhance, ImageOps
    from skimage import data

    from facefd.cli import score_main

    astronaut = Image.fromarray(data.astronaut())
    faces = data.lfw_subset()[:100]

    def lfw(i):
        tile = Image.fromarray((faces[i] * 255).astype(np.uint8)).convert("RGB").resize((160, 160), Image.BICUBIC)
        canvas = Image.new("RGB", (320, 320), (120, 120, 120))
        canvas.paste(tile, (80, 80))
        return canvas

    buffer = io.BytesIO()
    astronaut.save(buffer, "JPEG", quality=40)
    reference, generated = tmp_path / "training", tmp_path / "generated"
    reference.mkdir()
    generated.mkdir()
    astronaut.save(reference / "astronaut.png")
    Image.new("RGB", (200, 200), (200, 180, 90)).save(reference / "sand.png")
    ImageOps.mirror(astronaut).save(generated / "copy_mirror.png")
    ImageEnhance.Brightness(astronaut).enhance(0.75).save(generated / "copy_dark.png")
    Image.open(io.BytesIO(buffer.getvalue())).save(generated / "copy_jpeg.png")
    for i in (5, 6, 7, 8):
        lfw(i).save(generated / f"other{i}.png")
    Image.new("RGB", (200, 200), (30, 90, 160)).save(generated / "sky.png")
    out = tmp_path / "report" / "scores.json"  # a folder that does not exist yet: made for the JSON and the PNG
    document = score_main([str(reference), str(generated), "--metrics", "identity_leak", "--json", str(out),
                           "--cache-dir", str(tmp_path / "cache")])
    result = document["scores"]["identity_leak"]
    names = document["sample"]["b"]
    leaked = {names[g] for g, _, d in result["closest"] if d < 0.6}
    assert leaked == {"copy_mirror.png", "copy_dark.png", "copy_jpeg.png"}
    assert all(document["sample"]["a"][r] == "astronaut.png" for g, r, d in result["closest"] if d < 0.6)
    assert result["faces"] == 7 and result["no_face_generated"] == 1 and result["no_face_reference"] == 1
    assert result["value"] == pytest.approx(3 / 7)
    assert min(d for g, _, d in result["closest"] if names[g].startswith("other")) > 0.6
    assert (out.parent / "identity_leak_pairs.png").stat().st_size > 10_000
    assert "3 of 7 generated faces" in capsys.readouterr().out
