"""torchmetrics' own unit tests of its FID, run with facefd's ``FrechetDistance`` in place of
``FrechetInceptionDistance``: the test file is read from a torchmetrics checkout at the installed
version (never copied into this project), the class name is pointed at facefd's class before the test
module imports it, and the FID Inception is random weights saved here, served through facefd's table
of known weights (no download).

    python bench/torchmetrics_fid_tests.py --torchmetrics-repo PATH/TO/torchmetrics   (needs: pip install cachier)

Prints pytest's summary; CUDA-only tests skip on a machine without a GPU.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

PLUGIN = '''
"""Point torchmetrics' FID class at facefd's, with the FID Inception from a random-weight file."""
import os
import pathlib

import torch
import torch_fidelity.feature_extractor_inceptionv3 as tfi

import facefd
import torchmetrics.image
import torchmetrics.image.fid
from facefd.utils import weights
from facefd.utils.files import file_sha256

here = pathlib.Path(__file__).parent
os.environ["TORCH_HOME"] = str(here / "torch_home")
path = here / "random_inception.pth"
if not path.exists():
    load, state = tfi.FeatureExtractorInceptionV3.load_state_dict, tfi.load_state_dict_from_url
    tfi.FeatureExtractorInceptionV3.load_state_dict = lambda self, sd, *a, **k: None
    tfi.load_state_dict_from_url = lambda *a, **k: {}
    torch.manual_seed(0)
    net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    tfi.FeatureExtractorInceptionV3.load_state_dict, tfi.load_state_dict_from_url = load, state
    torch.save(net.state_dict(), path)
spec = weights.KNOWN_WEIGHTS["inception"]
weights.KNOWN_WEIGHTS["inception"] = weights.KnownWeights(
    url=path.as_uri(), sha256=file_sha256(path), filename=spec.filename, description=spec.description)
torchmetrics.image.fid.FrechetInceptionDistance = facefd.FrechetDistance
torchmetrics.image.FrechetInceptionDistance = facefd.FrechetDistance
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torchmetrics-repo", required=True, type=Path, help="a git checkout of torchmetrics")
    args = parser.parse_args()
    import torchmetrics

    tag = f"v{torchmetrics.__version__}"
    work = Path(tempfile.mkdtemp(prefix="tm-fid-"))
    archive = subprocess.run(["git", "-C", str(args.torchmetrics_repo), "archive", tag, "tests/unittests"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    tests = work / "tests"
    (tests / "facefd_in_place.py").write_text(textwrap.dedent(PLUGIN))
    print(f"torchmetrics {tag} tests/unittests/image/test_fid.py with facefd.FrechetDistance, in {work}")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "facefd_in_place", "-p", "no:cacheprovider",
                           "-rs", "unittests/image/test_fid.py"], cwd=tests,
                          env={**__import__("os").environ, "PYTHONPATH": str(tests)})
    raise SystemExit(proc.returncode)


if __name__ == "__main__":
    main()
