"""Task models built from the flow layers: next-frame prediction and sequence classification."""
from flow_escnn.models.classifier import ExportedSequenceClassifier, SequenceClassifier
from flow_escnn.models.predictor import ExportedNextFramePredictor, NextFramePredictor

__all__ = [
    "NextFramePredictor",
    "ExportedNextFramePredictor",
    "SequenceClassifier",
    "ExportedSequenceClassifier",
]
