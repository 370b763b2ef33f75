"""Experiments: Flowing-MNIST next-frame prediction, moving-KTH classification, the demo.

Run them from the command line (``python -m flow_escnn.experiments --help``) or from Python:

* :mod:`~flow_escnn.experiments._config` -- :class:`ExperimentConfig`, velocity-set syntax and
  the model factory (FERNN, G-RNN, G-RNN+ next-frame predictors);
* :mod:`~flow_escnn.experiments._datasets` -- the seeded Flowing-MNIST splits of a config;
* :mod:`~flow_escnn.experiments._training` -- seeding, determinism, checkpoints, the training
  loop and :func:`train_flowing`;
* :mod:`~flow_escnn.experiments._evaluation` -- test / per-step / per-velocity MSE and
  :func:`evaluate_checkpoint`;
* :mod:`~flow_escnn.experiments._plots` -- PNG figures (matplotlib, Agg);
* :mod:`~flow_escnn.experiments._demo` -- the small FERNN vs G-RNN demo;
* :mod:`~flow_escnn.experiments._kth` -- moving-KTH action classification;
* :mod:`~flow_escnn.experiments._run_folder` -- one owner per run folder, nothing replaced.

Library modules log (``logging``) and never print; only :mod:`~flow_escnn.experiments._cli`
prints tables and shows progress bars.
"""
from flow_escnn.experiments._config import (
    ExperimentConfig,
    build_model,
    parse_flow_steps,
    parse_velocities,
    velocity_key,
)
from flow_escnn.experiments._evaluation import evaluate_checkpoint, evaluate_model
from flow_escnn.experiments._run_folder import RunFolderBusy, RunFolderError, claim_run_folder
from flow_escnn.experiments._training import load_checkpoint, train_flowing

__all__ = [
    "ExperimentConfig",
    "build_model",
    "parse_velocities",
    "parse_flow_steps",
    "velocity_key",
    "train_flowing",
    "load_checkpoint",
    "evaluate_model",
    "evaluate_checkpoint",
    "claim_run_folder",
    "RunFolderError",
    "RunFolderBusy",
]
