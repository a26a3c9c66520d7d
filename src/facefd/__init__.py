"""facefd: face-domain image statistics (DINO-faces features, FDD, probes, anonymization)."""
from facefd.callbacks import FDDCallback
from facefd.metrics import FDD, FrechetDistance, frechet_distance
from facefd.models.backbone import UntrustedCodeError, trusting_code
from facefd.models.extractor import FeatureExtractor, load_extractor
from facefd.models.probe.predictor import AttributePredictor

__version__ = "0.1.0"
__all__ = ["AttributePredictor", "FDD", "FDDCallback", "FeatureExtractor", "FrechetDistance", "__version__", "UntrustedCodeError", "frechet_distance", "load_extractor",
           "trusting_code"]
