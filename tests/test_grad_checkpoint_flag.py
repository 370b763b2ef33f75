"""``--grad-checkpoint`` (gradient checkpointing) and its old spelling ``--checkpoint`` (issue 25, item 13)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from flow_escnn.experiments._cli import _overrides
from flow_escnn.experiments._config import ExperimentConfig
from flow_escnn.experiments._kth import KTHConfig
from flow_escnn.experiments._parser import build_parser
from flow_escnn.experiments._world import WorldExperimentConfig

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "train": (["train", "--out", "run"], lambda o: ExperimentConfig(**o).resolve()),
    "world": (["world", "--out", "run"], lambda o: WorldExperimentConfig(**o).resolve()),
    "kth": (["kth", "--root", "kth", "--out", "run"], lambda o: KTHConfig(root="kth", **o)),
}


def _parse(argv):
    return build_parser().parse_args(argv)


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("new, old, value", [("--grad-checkpoint", "--checkpoint", True),
                                             ("--no-grad-checkpoint", "--no-checkpoint", False)])
def test_both_spellings_give_the_same_config(command, new, old, value):
    base, make = COMMANDS[command]
    a, b = _parse([*base, new]), _parse([*base, old])
    assert a.gradient_checkpointing is value and b.gradient_checkpointing is value
    assert vars(a) == vars(b)
    config = make(_overrides(a))
    assert config == make(_overrides(b))
    assert config.gradient_checkpointing is value
    # the switch is still the config field every config.json and checkpoint.pt records
    assert config.to_dict()["gradient_checkpointing"] is value


def test_not_given_keeps_the_config_default():
    args = _parse(["train", "--out", "run"])
    assert not hasattr(args, "gradient_checkpointing")  # argparse.SUPPRESS: resume keeps the saved value
    assert ExperimentConfig(**_overrides(args)).resolve().gradient_checkpointing is False


def test_old_config_field_still_reads():
    """A config saved before the rename (field ``gradient_checkpointing``) loads unchanged."""
    saved = ExperimentConfig(gradient_checkpointing=True).resolve()
    loaded = ExperimentConfig.from_dict(dict(saved.to_dict()))
    assert loaded.gradient_checkpointing is True


def test_checkpoint_every_is_not_taken_for_the_switch():
    args = _parse(["train", "--out", "run", "--checkpoint-every", "7", "--grad-checkpoint"])
    assert args.checkpoint_every == 7 and args.gradient_checkpointing is True
    args = _parse(["train", "--out", "run", "--checkpoint-every", "7"])
    assert not hasattr(args, "gradient_checkpointing")


@pytest.mark.parametrize("command", ["train", "world", "kth"])
def test_help_shows_the_new_name_first(command):
    help_text = build_parser()._subparsers._group_actions[0].choices[command].format_help()
    line = next(ln for ln in help_text.splitlines() if "checkpoint," in ln and "--checkpoint-every" not in ln)
    names = [s.strip() for s in line.split(",")]
    assert names[0] == "--grad-checkpoint"
    assert "--checkpoint" in names  # the old spelling is an alias


def test_docs_use_the_new_name():
    """README and docs say ``--grad-checkpoint``; ``--checkpoint`` only where the old spelling is named."""
    old = re.compile(r"--checkpoint(?![-\w])")
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.rst"))]
    stale = []
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if old.search(line) and "old spelling" not in line:
                stale.append(f"{path.name}:{n}: {line.strip()}")
    assert not stale, "\n".join(stale)
    assert "--grad-checkpoint" in (ROOT / "docs" / "experiments.rst").read_text()
