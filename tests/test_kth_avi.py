"""The real KTH (issue 25, items 11 and 12): ``.avi`` videos in the folder layout of the download,
decoded with imageio-ffmpeg and cached; the paper's flips and best-validation selection; and
``kth`` taking the model options of ``train`` from one definition.

The videos are tiny ones the tests write with imageio-ffmpeg's writer (:func:`tests.tiny.write_tiny_kth_avi`).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import flow_escnn.data._clip_io as clip_io
from flow_escnn.data import (
    KTH_ACTIONS,
    KTH_CACHE_DIRNAME,
    CacheWriteError,
    MissingExtraError,
    MovingKTH,
    check_kth_decoder,
    find_kth_videos,
)
from flow_escnn.data._digits import DataFileError
from flow_escnn.experiments._cli import _overrides, main
from flow_escnn.experiments._kth import KTHConfig, flip_batch, train_kth
from flow_escnn.experiments._parser import MODEL_GROUP, build_parser
from tests.tiny import TINY_KTH_PERSONS, tiny_kth_video, write_avi, write_tiny_kth_avi

NO_DECODER = "imageio-ffmpeg is not installed: pip install 'flow_escnn[kth]' (or scripts/bootstrap.sh) to run this test"
#: A tiny kth run: 4-frame clips at stride 2 (span 7 of the 10 frames), 8x8, two steps.
TINY_KTH_ARGS = ["--num-frames", "4", "--stride", "2", "--size", "8", "--steps", "2", "--batch-size", "2",
                 "--train-velocities", "1", "--eval-every", "1", "--no-progress"]
SMALL = dict(num_frames=4, stride=2, size=8, velocities=[(0, 0)])


@pytest.fixture
def ffmpeg():
    return pytest.importorskip("imageio_ffmpeg", reason=NO_DECODER)


@pytest.fixture
def avi_root(tmp_path, ffmpeg):
    return write_tiny_kth_avi(tmp_path / "kth")


@pytest.fixture
def count_decodes(monkeypatch):
    """Count the videos decoded (FrameCache looks the decoder up when it is made)."""
    calls = []
    real = clip_io.decode_video

    def counting(path):
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(clip_io, "decode_video", counting)
    return calls


def _block_decoder(monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # `import imageio_ffmpeg` raises ImportError


# -- reading the download's layout ------------------------------------------------------------------------------
def test_avi_folder_as_downloaded_gives_the_paper_splits_and_the_frames_written(avi_root, tmp_path):
    videos = find_kth_videos(avi_root)
    assert len(videos) == 2 * len(TINY_KTH_PERSONS) and all(v.is_video for v in videos)
    assert {v.path.parent.name for v in videos} == {"walking", "boxing"}  # one folder per action, as unzipped
    splits = {s: MovingKTH(avi_root, s, **SMALL) for s in ("train", "val", "test")}
    assert {s: sorted({int(n[6:8]) for n in ds.videos}) for s, ds in splits.items()} == {
        "train": [1, 2], "val": [17], "test": [21]}
    assert sorted(splits["val"].labels.tolist()) == sorted(KTH_ACTIONS.index(a) for a in ("walking", "boxing"))
    # the same frames saved as pre-extracted .npy clips give the same dataset, to the bit (lossless video)
    npy_root = tmp_path / "npy"
    npy_root.mkdir()
    for v in videos:
        np.save(npy_root / f"{v.name}_uncomp.npy", tiny_kth_video(v.person, v.action))
    for split, ds in splits.items():
        ref = MovingKTH(npy_root, split, **SMALL)
        assert ds.videos == ref.videos and ds.starts == ref.starts
        assert torch.equal(ds.clips, ref.clips) and torch.equal(ds.labels, ref.labels)
    # control: the square moves, so the check above is not comparing constant clips
    assert not torch.equal(splits["train"].clips[:, 0], splits["train"].clips[:, 1])


def test_a_lossy_video_like_kths_own_decodes_to_its_gray_frames(tmp_path, ffmpeg):
    frames = tiny_kth_video(3, "walking", height=24, width=32)
    path = write_avi(tmp_path / "person03_walking_d1_uncomp.avi", frames, codec="mpeg4")
    decoded = clip_io.decode_video(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames).mean() < 4  # mpeg4 is lossy: close, not equal


def test_rgb_to_gray_is_opencvs_fixed_point_formula():
    rgb = np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 200, 30]], np.uint8)
    expected = [255, 0, 76, 150, 29, round(0.299 * 10 + 0.587 * 200 + 0.114 * 30)]
    assert clip_io._rgb_to_gray_u8(rgb).tolist() == expected


# -- the cache --------------------------------------------------------------------------------------------------
def test_decoded_frames_are_cached_and_decoded_again_only_when_stale(avi_root, count_decodes):
    MovingKTH(avi_root, "train", **SMALL)
    assert sorted(count_decodes) == sorted(f"person{p:02d}_{a}_d1_uncomp.avi" for p in (1, 2)
                                           for a in ("walking", "boxing"))  # the train split's videos only
    cache = avi_root / KTH_CACHE_DIRNAME
    cached = cache / "walking" / "person01_walking_d1_uncomp.npy"
    record = json.loads(cached.with_suffix(".json").read_text())
    source = avi_root / "walking" / "person01_walking_d1_uncomp.avi"
    assert record["source"] == {"size": source.stat().st_size, "mtime_ns": source.stat().st_mtime_ns}
    assert np.array_equal(np.load(cached), tiny_kth_video(1, "walking"))
    assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp")]  # atomic writes leave no temporary file

    count_decodes.clear()
    again = MovingKTH(avi_root, "train", **SMALL)
    assert count_decodes == []  # a valid cache: nothing decoded
    assert len(find_kth_videos(avi_root)) == 2 * len(TINY_KTH_PERSONS)  # the cache is not taken for videos

    # the source changes (a new file, its size and time): decoded again, and the new frames are read
    write_avi(source, tiny_kth_video(1, "walking")[::-1].copy())
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = MovingKTH(avi_root, "train", **SMALL)
    assert count_decodes == ["person01_walking_d1_uncomp.avi"]
    assert not torch.equal(changed.clips, again.clips)
    # a cache file cut short, or a lost record: decoded again
    count_decodes.clear()
    with open(cached, "r+b") as fh:
        fh.truncate(100)
    cached_box = cache / "boxing" / "person02_boxing_d1_uncomp.json"
    cached_box.unlink()
    assert torch.equal(MovingKTH(avi_root, "train", **SMALL).clips, changed.clips)
    assert sorted(count_decodes) == ["person01_walking_d1_uncomp.avi", "person02_boxing_d1_uncomp.avi"]


def test_a_given_cache_folder_leaves_the_data_folder_untouched(avi_root, tmp_path, count_decodes):
    cache = tmp_path / "elsewhere"
    MovingKTH(avi_root, "val", cache_dir=cache, **SMALL)
    assert not (avi_root / KTH_CACHE_DIRNAME).exists()
    assert sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*.npy")) == [
        "boxing/person17_boxing_d1_uncomp.npy", "walking/person17_walking_d1_uncomp.npy"]
    count_decodes.clear()
    MovingKTH(avi_root, "val", cache_dir=cache, **SMALL)
    assert count_decodes == []
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(CacheWriteError, match="--cache-dir"):
        MovingKTH(avi_root, "test", cache_dir=blocker / "cache", **SMALL)


def test_a_pre_extracted_clip_is_read_instead_of_its_avi(avi_root, count_decodes):
    np.save(avi_root / "walking" / "person21_walking_d1_uncomp.npy", tiny_kth_video(21, "walking"))
    videos = {v.name: v for v in find_kth_videos(avi_root)}
    assert videos["person21_walking_d1"].path.suffix == ".npy" and videos["person21_boxing_d1"].is_video
    MovingKTH(avi_root, "test", **SMALL)
    assert count_decodes == ["person21_boxing_d1_uncomp.avi"]


def test_an_undecodable_video_is_named(tmp_path, ffmpeg):
    folder = tmp_path / "kth" / "boxing"
    folder.mkdir(parents=True)
    (folder / "person01_boxing_d1_uncomp.avi").write_bytes(b"RIFF\x00\x00")
    with pytest.raises(DataFileError, match=r"cannot decode the video .*person01_boxing_d1_uncomp\.avi") as exc:
        MovingKTH(tmp_path / "kth", "train", **SMALL)
    assert "\n" not in str(exc.value) and "ffmpeg version" not in str(exc.value)  # one line, not ffmpeg's banner


# -- without the decoder ----------------------------------------------------------------------------------------
def test_without_imageio_ffmpeg_one_line_names_the_extra_before_any_work(avi_root, tmp_path, monkeypatch, capsys):
    _block_decoder(monkeypatch)
    with pytest.raises(MissingExtraError, match=r"pip install 'flow_escnn\[kth\]'") as exc:
        MovingKTH(avi_root, "train", **SMALL)
    assert isinstance(exc.value, ImportError) and "\n" not in str(exc.value)
    assert not (avi_root / KTH_CACHE_DIRNAME).exists()  # stopped before decoding anything
    with pytest.raises(MissingExtraError):
        train_kth(_kth_config(avi_root), tmp_path / "direct")
    assert not (tmp_path / "direct").exists()  # checked before the run folder is even claimed
    out = tmp_path / "run"
    code = main(["kth", "--root", str(avi_root), "--out", str(out), *TINY_KTH_ARGS])
    err = capsys.readouterr().err
    assert code == 2 and "flow_escnn[kth]" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (out / "metrics.json").exists() and not (out / "config.json").exists()


def test_cached_videos_need_no_decoder(avi_root, monkeypatch):
    before = MovingKTH(avi_root, "test", **SMALL)
    _block_decoder(monkeypatch)
    assert torch.equal(MovingKTH(avi_root, "test", **SMALL).clips, before.clips)
    check_kth_decoder(avi_root, persons=[21])  # the test persons are cached
    with pytest.raises(MissingExtraError):
        check_kth_decoder(avi_root)  # control: the others are not


# -- training: flips and the best-validation model --------------------------------------------------------------
def test_flip_batch_mirrors_about_half_the_clips_and_repeats():
    clips = torch.rand(64, 3, 1, 5, 6)
    out = flip_batch(clips, seed=0, step=3)
    flipped = [bool(torch.equal(o, c.flip(-1))) for o, c in zip(out, clips)]
    kept = [bool(torch.equal(o, c)) for o, c in zip(out, clips)]
    assert all(f != k for f, k in zip(flipped, kept)) and 16 < sum(flipped) < 48
    assert torch.equal(flip_batch(clips, seed=0, step=3), out)
    assert not torch.equal(flip_batch(clips, seed=0, step=4), out)  # another step, other flips


def _kth_config(root, **changes):
    base = dict(root=str(root), num_frames=4, stride=2, size=8, steps=4, batch_size=2, train_velocities="1",
                flow_radius=1, hidden_channels=2, eval_every=1)
    return KTHConfig(**{**base, **changes})


def test_training_flips_only_when_asked(avi_root, tmp_path):
    flipped = train_kth(_kth_config(avi_root, steps=2), tmp_path / "flip")
    plain = train_kth(_kth_config(avi_root, steps=2, flip=False), tmp_path / "plain")
    assert flipped["config"]["flip"] is True and plain["config"]["flip"] is False
    a = torch.load(tmp_path / "flip" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))


@pytest.mark.parametrize("select", ["best_val", "last"])
def test_the_test_split_evaluates_the_best_validation_model(avi_root, tmp_path, monkeypatch, select):
    """Scripted validation accuracies 0.2, 0.9, 0.5, 0.9: best_val picks step 2 (the earliest best); the test
    split and checkpoint.pt then hold the weights the model had at step 2."""
    import flow_escnn.experiments._kth as kth

    scripted = iter([0.2, 0.9, 0.5, 0.9])
    seen = []  # (split, weights) of every accuracy call

    def fake_accuracy(model, clips, labels, batch_size, device):
        weights = {k: v.detach().clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
        split = "val" if clips is val.clips else "test"
        seen.append((split, weights))
        return next(scripted) if split == "val" else 0.25

    val = MovingKTH(avi_root, "val", num_frames=4, stride=2, size=8, velocities=[(v, w) for v in (-1, 0, 1)
                                                                                   for w in (-1, 0, 1)])
    real_init = kth.MovingKTH

    def moving_kth(root, split, **kw):
        return val if split == "val" else real_init(root, split, **kw)

    monkeypatch.setattr(kth, "MovingKTH", moving_kth)
    monkeypatch.setattr(kth, "accuracy", fake_accuracy)
    metrics = train_kth(_kth_config(avi_root, select=select), tmp_path / "run")
    at = [w for split, w in seen if split == "val"]  # the weights after steps 1..4
    tested = [w for split, w in seen if split == "test"]
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert [p["val_accuracy"] for p in metrics["val_curve"]] == [0.2, 0.9, 0.5, 0.9]
    assert metrics["last_val_accuracy"] == 0.9 and ckpt["trained_steps"] == 4
    step = 2 if select == "best_val" else 4
    assert metrics["selected_step"] == step and ckpt["step"] == step and metrics["selection"] == select
    assert metrics["val_accuracy"] == 0.9
    assert all(torch.equal(tested[-1][k], at[step - 1][k]) for k in at[step - 1])
    assert all(torch.equal(ckpt["model"][k], at[step - 1][k]) for k in at[step - 1])
    assert any(not torch.equal(at[1][k], at[3][k]) for k in at[1])  # control: the weights did change


# -- item 12: kth takes train's model options -------------------------------------------------------------------
def _commands():
    return build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse has no public accessor


def _model_group(command):
    groups = [g for g in _commands()[command]._action_groups if g.title == MODEL_GROUP]  # noqa: SLF001
    assert len(groups) == 1, f"{command} must have exactly one {MODEL_GROUP!r} group"
    return {a.option_strings[0]: a for a in groups[0]._group_actions}  # noqa: SLF001


def _sample(action):
    return str(action.choices[0]) if action.choices else "1"


def test_kth_takes_every_model_option_of_train():
    train = _model_group("train")
    assert {"--nonlinearity", "--pool", "--group", "--model"} <= set(train)  # the options of the issue are there
    kth_parser = _commands()["kth"]
    kth_options = kth_parser._option_string_actions  # noqa: SLF001
    for option, action in train.items():
        assert option in kth_options, f"kth has no {option}"
        ours = kth_options[option]
        assert (ours.dest, ours.type, ours.help) == (action.dest, action.type, action.help), option
        args = build_parser().parse_args(["kth", "--root", "r", "--out", "o", option, _sample(action)])
        assert getattr(args, action.dest) is not None
    # one definition: train, world and kth list the same model options (models aside)
    for command in ("world", "kth"):
        assert set(_model_group(command)) == set(train), command


@pytest.mark.parametrize("argv, message", [
    (["--group", "-1"], "pass --nonlinearity norm_squash or gated"),
    (["--group", "-1", "--nonlinearity", "norm_squash"], "pass --pool mean"),
    (["--model", "conv3d", "--pool", "mean"], "--pool does nothing for model 'conv3d'"),
    (["--model", "conv3d", "--nonlinearity", "tanh"], "--nonlinearity does nothing for model 'conv3d'"),
    (["--flow-steps", "1"], "--flow-steps does nothing"),
    (["--pool", "median"], "invalid choice"),
])
def test_kth_model_option_errors_are_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["kth", "--root", str(tmp_path), "--out", str(tmp_path / "run"), *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_kth_on_so2_with_the_options_train_takes(avi_root, tmp_path):
    out = tmp_path / "so2"
    argv = ["kth", "--root", str(avi_root), "--out", str(out), *TINY_KTH_ARGS, "--flow-radius", "1",
            "--group", "-1", "--hidden-fields", "1", "--nonlinearity", "norm_squash", "--pool", "mean"]
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["group"] == -1 and m["config"]["pool"] == "mean" and m["config"]["nonlinearity"] == "norm_squash"
    assert m["num_clips"] == {"train": 4, "val": 2, "test": 2} and 1 <= m["selected_step"] <= 2
    assert m["config"]["flip"] is True and m["config"]["select"] == "best_val"


def test_the_documented_kth_commands_parse():
    text = (Path(__file__).resolve().parents[1] / "docs" / "experiments.rst").read_text().replace("\\\n", " ")
    commands = [line.split("python -m flow_escnn.experiments", 1)[1].split() for line in text.splitlines()
                if "python -m flow_escnn.experiments kth --root" in line]
    assert len(commands) >= 3
    for argv in commands:
        args = build_parser().parse_args(argv)  # an unknown option or value exits 2
        overrides = _overrides(args)
        config = KTHConfig(root=args.root, **overrides)
        config.validate()
        config.check_given(overrides)
