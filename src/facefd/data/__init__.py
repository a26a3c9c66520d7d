"""Data: image folders, CelebA-style labels, DINO multi-crop, the embedded sample face set."""
from facefd.utils.lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "BadImagesError": "facefd.data.images", "ImageFolderError": "facefd.data.images",
    "list_images": "facefd.data.images", "load_rgb": "facefd.data.images",
    "EvalTransform": "facefd.data.transforms", "MultiCropAugmentation": "facefd.data.transforms",
    "FaceImageDataModule": "facefd.data.datamodule", "SampleFacesDataModule": "facefd.data.datamodule",
    "FaceImageDataset": "facefd.data.dataset",
    "SAMPLE_ATTRIBUTES": "facefd.data.sample_faces", "generate_sample_faces": "facefd.data.sample_faces",
})
