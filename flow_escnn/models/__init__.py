"""Task models built from the flow layers: next-frame prediction, world models (views and actions)
and sequence classification (and the 3D-CNN classification baseline), each a thin shell around
the recurrence engine."""
from flow_escnn.models._classifier import READOUTS, ExportedSequenceClassifier, SequenceClassifier
from flow_escnn.models._predictor import ExportedNextFramePredictor, NextFramePredictor
from flow_escnn.models._program import OUTPUT_ACTIVATIONS
from flow_escnn.models._config import ClassifierConfig, ModelConfig, PredictorConfig, WorldModelConfig
from flow_escnn.models._factory import build_classifier, build_predictor, build_world_model
from flow_escnn.models._world import ExportedWorldModel, WorldModel
from flow_escnn.models._reference import ReferencePredictor
from flow_escnn.models._saving import load_model, model_record, save_model, transfer_weights, with_flows
from flow_escnn.nn._baselines import Conv3DClassifier
from flow_escnn.nn.cell_kinds import CELL_KINDS, CELLS
from flow_escnn.nn._nonlinearity import CELL_NONLINEARITIES, NONLINEARITIES
from flow_escnn.nn._pooling import VELOCITY_POOLS

__all__ = [
    "NextFramePredictor",
    "ExportedNextFramePredictor",
    "SequenceClassifier",
    "ExportedSequenceClassifier",
    "Conv3DClassifier",
    "ModelConfig",
    "PredictorConfig",
    "ClassifierConfig",
    "WorldModelConfig",
    "WorldModel",
    "ExportedWorldModel",
    "build_world_model",
    "build_predictor",
    "build_classifier",
    "ReferencePredictor",
    "save_model",
    "load_model",
    "model_record",
    "transfer_weights",
    "with_flows",
    "CELLS",
    "CELL_KINDS",
    "OUTPUT_ACTIVATIONS",
    "READOUTS",
    "VELOCITY_POOLS",
    "NONLINEARITIES",
    "CELL_NONLINEARITIES",
]
