"""One checkpoint format (``load_model`` reads save_model files, a run's ``checkpoint.pt`` and the run
folder), the docs' "train with the CLI, then use the model in Python" snippet, and moving a model's
weights to another V (``with_flows`` / ``transfer_weights``; a plain ``load_state_dict`` still refuses)."""
from __future__ import annotations

import doctest
import re
import shlex
from pathlib import Path

import pytest
import torch

from flow_escnn import FlowSet
from flow_escnn.experiments._cli import main
from flow_escnn.experiments._training import FlowingTask
from flow_escnn.experiments._training import load_model as load_run_model
from flow_escnn.experiments._world import load_world_model
from flow_escnn.models import (
    ClassifierConfig,
    Conv3DClassifier,
    NextFramePredictor,
    SequenceClassifier,
    WorldModel,
    build_classifier,
    load_model,
    model_record,
    transfer_weights,
    with_flows,
)
from flow_escnn.nn import GRNN, FERNN, GRNNPlus
from escnn import gspaces, nn as enn
from tests.tiny import cli

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "checkpoints.rst"
C4 = gspaces.rot2dOnR2(4)
IN = enn.FieldType(C4, [C4.trivial_repr])
HID = enn.FieldType(C4, 2 * [C4.regular_repr])
WORLD_TINY = ["--digits", "synthetic", "--world-size", "12", "--window-size", "8", "--digit-size", "5",
              "--num-digits", "2", "--num-train", "8", "--num-val", "4", "--num-test", "4", "--t-in", "3", "--t-out", "2",
              "--rollout", "4", "--batch-size", "4", "--hidden-channels", "2", "--eval-every", "2",
              "--checkpoint-every", "2", "--no-progress", "--no-plots"]


def _equal_outputs(a: torch.nn.Module, b: torch.nn.Module, *inputs) -> bool:
    with torch.no_grad():
        return torch.equal(a.eval()(*inputs), b.eval()(*inputs))


def _strip_record(path: Path) -> Path:
    """The checkpoint as written before runs stored their model record."""
    payload = torch.load(path, weights_only=True)
    del payload["model_record"]
    old = path.with_name("old.pt")
    torch.save(payload, old)
    return old


# -- the docs' snippet ---------------------------------------------------------------------------------------
def _snippet():
    """The shell command and the Python session of docs/checkpoints.rst's "train with the CLI" section."""
    text = PAGE.read_text()
    section = text.split("Train with the CLI, then use the model in Python", 1)[1]
    command = re.search(r"\.\. code-block:: bash\n\n((?:    .*\n)+)", section).group(1).strip()
    session = re.search(r"\.\. code-block:: pycon\n\n((?:    .*\n|\n)+?)\n\S", section).group(1)
    return shlex.split(command), "\n".join(line[4:] for line in session.splitlines()) + "\n"


def test_the_docs_snippet_trains_with_the_cli_and_loads_the_training_model(tmp_path, monkeypatch):
    argv, session = _snippet()
    assert argv[:3] == ["python", "-m", "flow_escnn.experiments"] and argv[3] == "train"
    built = []
    original = FlowingTask.build_model

    def build_and_keep(self, checkpoint=False):
        built.append(original(self, checkpoint=checkpoint))
        return built[-1]

    monkeypatch.setattr(FlowingTask, "build_model", build_and_keep)
    monkeypatch.chdir(tmp_path)
    assert main([*argv[3:], *cli(), "--steps", "2"]) == 0  # the docs' command with the tiny sizes
    test = doctest.DocTestParser().get_doctest(session, {}, "docs/checkpoints.rst", str(PAGE), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0 and result.attempted == 6, result
    trained = built[0]  # the model the run trained (in place)
    loaded = load_model(tmp_path / "runs" / "demo")
    assert isinstance(loaded, NextFramePredictor) and not loaded.training
    x = torch.rand(2, 4, 1, 10, 10)
    assert _equal_outputs(loaded, trained, x, 3)
    assert _equal_outputs(load_model(tmp_path / "demo.pt"), trained, x, 3)
    # control: the comparison sees a change of one weight
    with torch.no_grad():
        loaded.encoder.cells[0].W.conv.weights.add_(0.1)
    assert not _equal_outputs(loaded, trained, x, 3)


# -- run checkpoints: the record, older checkpoints, refusals ------------------------------------------------
def test_a_run_checkpoint_holds_the_model_record_and_older_ones_still_load(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "2", "--model", "grnn_plus", *cli()]) == 0
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    record = payload["model_record"]
    assert record["class"] == "NextFramePredictor" and "state_dict" not in record  # the weights sit under "model"
    via_record = load_model(out / "checkpoint.pt")
    evaluated, _, _ = load_run_model(out / "checkpoint.pt")  # what `evaluate` rebuilds from the config
    x = torch.rand(1, 3, 1, 10, 10)
    assert _equal_outputs(via_record, evaluated, x, 2)
    old = load_model(_strip_record(out / "checkpoint.pt"))
    assert not old.training and _equal_outputs(old, evaluated, x, 2)
    # a resumed run keeps writing it
    assert main(["train", "--out", str(out), "--resume", "--steps", "3", "--no-plots", "--no-progress"]) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=True)["model_record"] == record


def test_world_runs_load_too(tmp_path):
    out = tmp_path / "w"
    assert main(["world", "--out", str(out), "--steps", "2", *WORLD_TINY]) == 0
    loaded = load_model(out)
    reference, config, _ = load_world_model(out / "checkpoint.pt")
    assert isinstance(loaded, WorldModel)
    views, actions = torch.rand(1, 3, 1, 8, 8), torch.zeros(1, 5, 3)
    assert _equal_outputs(loaded, reference, views, actions, 2)
    assert _equal_outputs(load_model(_strip_record(out / "checkpoint.pt")), reference, views, actions, 2)


@pytest.mark.parametrize("model", ["fernn", "conv3d"])
def test_classifier_checkpoints_load_with_and_without_their_record(tmp_path, model):
    """The payload a ``kth`` run writes (its config holds the classifier section plus data fields)."""
    section = dict(model=model) if model == "conv3d" else dict(model=model, hidden_channels=2, flow_radius=1)
    config = ClassifierConfig(**section).resolve()
    net = build_classifier(config, 6)
    task_config = {**config.to_dict(), "root": "kth", "num_frames": 4, "size": 8}
    payload = {"model": net.state_dict(), "step": 1, "config": task_config}
    torch.save({**payload, "model_record": model_record(net, weights=False)}, tmp_path / "new.pt")
    torch.save(payload, tmp_path / "old.pt")
    clips = torch.rand(2, 4, 1, 8, 8)
    for name in ("new.pt", "old.pt"):
        loaded = load_model(tmp_path / name)
        assert isinstance(loaded, Conv3DClassifier if model == "conv3d" else SequenceClassifier)
        assert _equal_outputs(loaded, net, clips)


def test_load_model_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file at"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="a folder without a checkpoint.pt"):
        load_model(tmp_path / "empty")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="written neither by flow_escnn.models.save_model nor by a command-line run"):
        load_model(tmp_path / "other.pt")
    net = NextFramePredictor(IN, HID, FlowSet.translations(C4, 1))
    record = {**model_record(net, weights=False), "format": "flow_escnn.model/99"}
    torch.save({"model": net.state_dict(), "config": {}, "model_record": record}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="unknown format"):
        load_model(tmp_path / "future.pt")
    torch.save({"model": net.state_dict(), "config": {"model": "fernn", "nonsense": 1, "hidden_fields": -3}},
               tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="without a model record, and its config does not rebuild its model"):
        load_model(tmp_path / "broken.pt")


# -- another V ---------------------------------------------------------------------------------------------
def _trained_on_v1(steps: int = 3) -> NextFramePredictor:
    torch.manual_seed(0)
    model = NextFramePredictor(IN, HID, FlowSet.translations(C4, 1), decoder_layers=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.rand(4, 5, 1, 8, 8)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x[:, :3], 2), x[:, 3:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _weights(model: torch.nn.Module):
    return {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def test_train_on_v1_evaluate_on_v2_with_the_same_weights():
    small = _trained_on_v1()
    fresh = NextFramePredictor(IN, HID, FlowSet.translations(C4, 1), decoder_layers=1)
    assert not torch.equal(small.encoder.cells[0].W.conv.weights, fresh.encoder.cells[0].W.conv.weights)  # it trained
    v2 = FlowSet.translations(C4, 2)
    for wide in (with_flows(small, v2),
                 transfer_weights(small.state_dict(), NextFramePredictor(IN, HID, v2, decoder_layers=1))):
        assert len(wide.flows) == 25
        mine, theirs = _weights(wide), _weights(small)
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
        # each slice of V evolves on its own: over V_2 the V_1 slices are exactly the V_1 model's
        x = torch.rand(2, 4, 1, 8, 8)
        with torch.no_grad():
            h1, h2 = small.eval().encoder(x).tensor, wide.eval().encoder(x).tensor
            pred = wide(x, 3)
        rows = [v2.index(v) for v in small.flows.velocities]
        assert torch.equal(h2[:, :, rows], h1)
        assert pred.shape == (2, 3, 1, 8, 8) and torch.isfinite(pred).all()
    # control: a plain load across V is refused, strict or not
    target = NextFramePredictor(IN, HID, v2, decoder_layers=1)
    for strict in (True, False):
        with pytest.raises(ValueError, match="(?s)flows: saved.*with_flows"):
            target.load_state_dict(small.state_dict(), strict=strict)


def test_a_cli_trained_model_runs_over_another_v(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "2", *cli()]) == 0
    model = load_model(out)
    wide = with_flows(model, FlowSet.translations(model.flows.gspace, 2))
    assert not wide.training and len(wide.flows) == 25 > len(model.flows)
    assert all(torch.equal(a, b) for a, b in zip(_weights(wide).values(), _weights(model).values()))
    with torch.no_grad():
        assert wide(torch.rand(1, 3, 1, 10, 10), 2).shape == (1, 2, 1, 10, 10)


def test_transfer_refuses_what_depends_on_v_or_differs_besides_v():
    v1, v2 = FlowSet.translations(C4, 1), FlowSet.translations(C4, 2)
    with pytest.raises(ValueError, match=r"differs in more \(hidden_type"):
        transfer_weights(FERNN(IN, HID, v1), FERNN(IN, enn.FieldType(C4, [C4.regular_repr]), v2))
    with pytest.raises(ValueError, match=r"differs in more \(interpolation"):
        transfer_weights(FERNN(IN, HID, v1), FERNN(IN, HID, v2, interpolation="bilinear"))
    with pytest.raises(TypeError, match="models of one class"):
        transfer_weights(FERNN(IN, HID, v1), NextFramePredictor(IN, HID, v2))
    with pytest.raises(TypeError, match="no flow set V to change"):
        with_flows(GRNN(IN, HID), v2)
    with pytest.raises(ValueError, match="flow_dependent must be one of"):
        transfer_weights(FERNN(IN, HID, v1), FERNN(IN, HID, v2), flow_dependent="copy")
    # per-velocity kernels (G-RNN+) and V-mixing weights depend on V
    plus = GRNNPlus(IN, HID, v1, velocity_kernel_size=5)
    with pytest.raises(ValueError, match=r"\['cells.0.K'\] depend on V"):
        with_flows(plus, v2)
    kept = with_flows(plus, v2, flow_dependent="keep")
    assert kept.cells[0].K.shape[0] == 25 and torch.equal(kept.cells[0].U.conv.weights, plus.cells[0].U.conv.weights)
    mixing = FERNN(IN, HID, v1, velocity_mixing=1)
    with pytest.raises(ValueError, match=r"\['cells.0.mix.weight'\] depend on V"):
        with_flows(mixing, FlowSet.rotations(C4, 1))
    # the same V is a plain load: nothing depends on it
    same = with_flows(plus, v1)
    assert torch.equal(same.cells[0].K, plus.cells[0].K)
