"""Data: image folders, CelebA-style labels, DINO multi-crop, the embedded sample face set."""
from facefd.data.datamodule import FaceImageDataModule, SampleFacesDataModule
from facefd.data.dataset import FaceImageDataset
from facefd.data.images import BadImagesError, ImageFolderError, list_images, load_rgb
from facefd.data.sample_faces import SAMPLE_ATTRIBUTES, generate_sample_faces
from facefd.data.transforms import EvalTransform, MultiCropAugmentation

__all__ = [
    "BadImagesError", "EvalTransform", "FaceImageDataModule", "FaceImageDataset", "ImageFolderError",
    "MultiCropAugmentation", "SAMPLE_ATTRIBUTES", "SampleFacesDataModule", "generate_sample_faces",
    "list_images", "load_rgb",
]
