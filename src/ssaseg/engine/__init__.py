"""Training / evaluation engine: optimiser and poly schedule, metrics, inference modes,
iteration-based trainer with exact resume, DDP, prediction and the demo."""
from .inference import predict_labels, predict_probs, slide_logits, slide_windows
from .metrics import ConfusionMatrix, metrics_from_confusion
from .optim import PolyLR, build_optimizer, build_param_groups, match_param_rule, poly_lr, vit_layer_id
from .trainer import TrainResult, evaluate, test, train

__all__ = [
    "ConfusionMatrix",
    "PolyLR",
    "TrainResult",
    "build_optimizer",
    "build_param_groups",
    "evaluate",
    "match_param_rule",
    "metrics_from_confusion",
    "poly_lr",
    "predict_labels",
    "predict_probs",
    "slide_logits",
    "slide_windows",
    "test",
    "train",
    "vit_layer_id",
]
