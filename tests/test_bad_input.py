"""Bad input is refused or handled, never silently wrong: one test per probe of the
"nothing silently wrong" review (state_dict meaning, velocities modulo the torus, types,
non-finite losses, vacuous checks, long rollouts, empty batches, CLI misuse, broken files)."""
from __future__ import annotations

import json

import pytest
import torch

from flow_escnn import FlowGenerator, FlowSet, TransportPlan
from flow_escnn._compat import enn, gspaces
from flow_escnn.experiments._cli import main
from flow_escnn.models import NextFramePredictor, SequenceClassifier, load_model, save_model
from flow_escnn.nn import FERNN, FERNNCell, FlowLSTM
from tests.tiny import cli

C4 = gspaces.rot2dOnR2(4)
C8 = gspaces.rot2dOnR2(8)
IN = enn.FieldType(C4, [C4.trivial_repr])
HID = enn.FieldType(C4, [C4.regular_repr])


# -- the meaning of a state_dict travels with it ---------------------------------------------------------------
def test_state_dict_of_another_flow_set_is_refused_naming_both():
    it8, ht8 = enn.FieldType(C8, [C8.trivial_repr]), enn.FieldType(C8, [C8.regular_repr])
    translations = FERNN(it8, ht8, FlowSet.translations(C8, 1))
    rotations = FERNN(it8, ht8, FlowSet(C8, [(0, 0, k) for k in range(-4, 4)] + [(1, 0, 0)]))  # also |V| = 9
    with pytest.raises(ValueError, match=r"flows: saved \[\[-1, -1, 0\].*this layer \[\[0, 0, -4\]"):
        rotations.load_state_dict(translations.state_dict())
    pred = NextFramePredictor(IN, HID, FlowSet.translations(C4, 1))
    with pytest.raises(ValueError, match="kind: saved 'fernn', this layer 'gru'"):
        NextFramePredictor(IN, HID, FlowSet.translations(C4, 1), cell="gru").load_state_dict(pred.state_dict(), strict=False)
    # control: the same settings load, and state dicts written before the facts were stored still load
    FERNN(it8, ht8, FlowSet.translations(C8, 1)).load_state_dict(translations.state_dict())
    old = {k: v for k, v in translations.state_dict().items() if not k.endswith("_extra_state")}
    FERNN(it8, ht8, FlowSet.translations(C8, 1)).load_state_dict(old)


# -- velocities are exact modulo the torus; aliasing is refused --------------------------------------------------
def test_any_integer_velocity_transports_exactly_modulo_the_torus():
    x = torch.randn(1, 1, HID.size, 8, 8, dtype=torch.float64)
    for huge in (8 * 10**17 + 1, -(2**70) * 8 + 1, 2**53 + 9):
        g = FlowGenerator(C4, (huge, 3), 1)
        small = FlowGenerator(C4, (huge % 8, 3), 1)
        for t in (1, 5):
            a = TransportPlan(HID, [g.psi(t)], (8, 8))(x)
            b = TransportPlan(HID, [small.psi(t)], (8, 8))(x)
            assert torch.equal(a, b), (huge, t)
    # control: a different velocity is a different transport
    other = TransportPlan(HID, [FlowGenerator(C4, (2, 3), 1).psi(1)], (8, 8))(x)
    assert not torch.equal(other, TransportPlan(HID, [FlowGenerator(C4, (1, 3), 1).psi(1)], (8, 8))(x))


def test_velocity_sets_larger_than_the_torus_are_refused():
    model = FERNN(IN, HID, FlowSet.translations(C4, 9))
    with pytest.raises(ValueError, match="V has 361 velocities but only 64 distinct flows on a 8x8 torus"):
        model(torch.zeros(1, 2, 1, 8, 8))
    model(torch.zeros(1, 2, 1, 19, 19))  # control: on a 19x19 torus they are distinct
    with pytest.raises(ValueError, match="more than a FlowSet holds"):
        FlowSet.translations(C4, 1000)


def test_cli_refuses_training_velocities_that_alias_on_the_grid(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", str(tmp_path / "r"), "--steps", "1", *cli(grid_size=8, train_velocities=9)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "only 64 distinct flows" in err


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda: FlowSet(C4, ["10"]), TypeError, "got str '10'"),
        (lambda: FlowSet.translations(C4, "1"), TypeError, "radius must be a non-negative integer, got str"),
        (lambda: FlowSet.rotations(C4, "2"), TypeError, r"steps must be a list of rotation steps .* got str '2'"),
        (lambda: FlowSet(C4, [1]), TypeError, r"a velocity is a tuple \(vx, vy\)"),
        (lambda: FlowSet(C4, None), TypeError, "generators must be an iterable"),
        (lambda: FERNNCell(IN, HID, FlowSet.identity(C4), interpolation="cubic"), ValueError,
         "interpolation must be one of"),
    ],
)
def test_wrong_types_get_messages_that_say_what_is_expected(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


# -- non-finite values ------------------------------------------------------------------------------------------
def test_training_stops_on_a_non_finite_loss_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    from flow_escnn.experiments import _training as training

    real = training.prediction_loss
    calls = {"n": 0}

    def poisoned(model, x, config):
        calls["n"] += 1
        loss = real(model, x, config)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(training, "prediction_loss", poisoned)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "5", *cli()]) == 2
    err = capsys.readouterr().err
    assert "training stopped at step 3: the loss is nan" in err and "last good checkpoint (step 2)" in err
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2  # kept, not overwritten
    assert not (out / "metrics.json").exists()


def test_long_rollouts_stay_bounded_with_tanh():
    """A ReLU FERNN with default initialisation can blow up over a long rollout (2 of 10 seeds did
    here, see docs/troubleshooting.rst); tanh is bounded by construction. T = 1000, 8x8."""
    blown = []
    for seed in (1, 3):  # two seeds whose ReLU rollout reached 1e19 and 1e37
        for nl in ("relu", "tanh"):
            torch.manual_seed(seed)
            model = FERNN(IN, HID, FlowSet.translations(C4, 1), nonlinearity=nl)
            x = torch.rand(1, 1000, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                _, states = model.forward_with_state(x, return_sequence=False)
            peak = float(states[0].tensor.abs().max())
            assert torch.isfinite(states[0].tensor).all()
            if nl == "tanh":
                assert peak <= 1.0
            else:
                blown.append(peak)
    assert max(blown) > 1e6  # control: the ReLU rollouts do blow up


# -- empty batches ---------------------------------------------------------------------------------------------
def test_batch_size_zero_gives_empty_results_of_the_right_shape():
    x = torch.zeros(0, 3, 1, 6, 6)
    assert FERNN(IN, HID, FlowSet.translations(C4, 1))(x).shape == (0, 3, 9, 4, 6, 6)
    assert FlowLSTM(IN, HID, FlowSet.rotations(C4, [0, 1]), mode="comoving")(x).shape == (0, 3, 2, 4, 6, 6)
    assert NextFramePredictor(IN, HID, FlowSet.translations(C4, 1))(x, 2, include_one_step=True).shape == (0, 4, 1, 6, 6)
    assert SequenceClassifier(IN, HID, FlowSet.translations(C4, 1), 3)(x).shape == (0, 3)


# -- whole models: save and load, and pickle through the same spec ----------------------------------------------
def test_save_model_and_torch_save_round_trip(tmp_path):
    model = NextFramePredictor(IN, HID, FlowSet.translations(C4, 1), cell="lstm", decoder_layers=1).eval()
    torch.save(model, tmp_path / "pickled.pt")  # through its construction spec (escnn's own objects do not pickle)
    pickled = torch.load(tmp_path / "pickled.pt", weights_only=False)
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    x = torch.randn(2, 3, 1, 6, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x, 2), model(x, 2))
        assert torch.equal(pickled(x, 2), model(x, 2))
    (tmp_path / "junk.pt").write_text("not a model")
    with pytest.raises(ValueError, match="is not a readable model file"):
        load_model(tmp_path / "junk.pt")


# -- the CLI -----------------------------------------------------------------------------------------------------
def _one_line_error(capsys, code) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_cli_refuses_empty_velocities_and_resume_with_overwrite(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", str(tmp_path / "a"), "--steps", "1", *cli(train_velocities="")])
    assert "cannot read the velocity set ''" in _one_line_error(capsys, exc.value.code)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", str(tmp_path / "a"), "--resume", "--overwrite"])
    assert "give one of them" in _one_line_error(capsys, exc.value.code)


def test_cli_evaluate_keeps_the_runs_metrics_and_overwrite_moves_old_files_first(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "2", *cli()]) == 0
    original = (out / "metrics.json").read_text()
    assert main(["evaluate", str(out / "checkpoint.pt"), "--no-plots", "--test-velocities", "1"]) == 0
    assert (out / "metrics.json").read_text() == original  # the run's own metrics stay
    assert json.loads((out / "evaluation" / "metrics.json").read_text())["test_mse"] is not None
    assert main(["train", "--out", str(out), "--steps", "1", "--overwrite", *cli()]) == 0
    moved = [p for p in out.iterdir() if p.name.startswith("replaced-")]
    assert len(moved) == 1 and (moved[0] / "checkpoint.pt").exists() and (moved[0] / "evaluation").is_dir()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 1
    capsys.readouterr()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"hello, I am a text file\n"])
def test_cli_reports_unreadable_checkpoints_in_one_line(tmp_path, capsys, content):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(content)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(bad), "--no-plots"])
    assert "is not a readable flow_escnn checkpoint" in _one_line_error(capsys, exc.value.code)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", str(tmp_path), "--resume", "--no-progress"])
    assert "is not a readable flow_escnn checkpoint" in _one_line_error(capsys, exc.value.code)


def test_cli_refuses_an_out_folder_that_is_a_file(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "below"):
        with pytest.raises(SystemExit) as exc:
            main(["train", "--out", str(out), "--steps", "1", *cli()])
        assert "is a file, not a folder" in _one_line_error(capsys, exc.value.code)


def test_state_dict_of_another_interpolation_is_refused():
    """A model trained with one resampling of 45-degree flows must not silently run with another."""
    it, hid = enn.FieldType(C8, [C8.trivial_repr]), enn.FieldType(C8, [C8.regular_repr])
    flows = FlowSet.rotations(C8, [-1, 0, 1])
    saved = FERNN(it, hid, flows, interpolation="cubic6").state_dict()
    FERNN(it, hid, flows).load_state_dict(saved)  # cubic6 is the default
    with pytest.raises(ValueError, match="interpolation: saved 'cubic6', this layer 'bilinear'"):
        FERNN(it, hid, flows, interpolation="bilinear").load_state_dict(saved)


def test_model_files_saved_under_the_bicubic_default_keep_loading(tmp_path):
    """save_model files of models built without ``interpolation`` when the default was bicubic
    (their spec has no interpolation; their layers recorded bicubic) load as bicubic models; an
    explicit interpolation in the spec is kept as it is."""
    it, hid = enn.FieldType(C8, [C8.trivial_repr]), enn.FieldType(C8, [C8.regular_repr])
    flows = FlowSet.rotations(C8, [-1, 0, 1])
    old = NextFramePredictor(it, hid, flows, interpolation="bicubic")
    old._init_args.pop("interpolation")  # as written when bicubic was the default
    save_model(old, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="interpolation: saved 'bicubic', this layer 'cubic6'"):
        NextFramePredictor(it, hid, flows).load_state_dict(old.state_dict())  # why load_model must rebuild
    loaded = load_model(tmp_path / "old.pt")
    assert loaded.encoder.cells[0].interpolation == "bicubic"
    x = torch.randn(1, 3, 1, 9, 9)
    assert torch.equal(loaded.eval()(x, 2), old.eval()(x, 2))
    save_model(NextFramePredictor(it, hid, flows, interpolation="bilinear"), tmp_path / "new.pt")
    assert load_model(tmp_path / "new.pt").encoder.cells[0].interpolation == "bilinear"


def test_configs_saved_before_the_interpolation_field_keep_bilinear(tmp_path):
    from flow_escnn.experiments import ExperimentConfig

    old = ExperimentConfig().to_dict()
    del old["interpolation"]
    assert ExperimentConfig.from_dict(old).interpolation == "bilinear"
    assert ExperimentConfig.from_dict(ExperimentConfig().to_dict()).interpolation == "cubic6"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", str(tmp_path / "x"), "--interpolation", "cubic"])
    assert exc.value.code == 2
