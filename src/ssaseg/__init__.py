"""ssaseg: the SSA-Seg pixel classifier (NeurIPS 2024) for any segmentation decoder."""
from .classifiers import LinearClassifier, SSAClassifier, build_classifier
from .models import count_parameters, create_model, list_models, register_model
from .segmentor import AuxHead, Segmentor

__version__ = "0.1.0"
__all__ = [
    "AuxHead",
    "LinearClassifier",
    "SSAClassifier",
    "Segmentor",
    "build_classifier",
    "count_parameters",
    "create_model",
    "list_models",
    "register_model",
]
