"""The ``>>>`` examples in the public docstrings run and give what they show (as torch and e3nn do)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil
from typing import List

import pytest

import flow_escnn
import torch

FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
#: public objects whose docstrings must carry a runnable example (the names a new user meets first)
MUST_SHOW = [
    "flow_escnn.flows._flowset.FlowSet",
    "flow_escnn.flows._generator.FlowGenerator",
    "flow_escnn.flows._element.GridElement",
    "flow_escnn.flows._functional.transport",
    "flow_escnn.flows.kinds.flow_kind",
    "flow_escnn.nn.cell_kinds.cell_kind",
    "flow_escnn.nn.cell_kinds.fernn.FERNN",
    "flow_escnn.checks._diagrams.check_flow_equivariance",
    "flow_escnn.models._config.ModelConfig.resolve",
]


def _modules() -> List[str]:
    names = [flow_escnn.__name__]
    for info in pkgutil.walk_packages(flow_escnn.__path__, prefix="flow_escnn."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return sorted(names)


def _run(tests) -> doctest.TestResults:
    runner = doctest.DocTestRunner(optionflags=FLAGS, verbose=False)
    for test in tests:
        torch.manual_seed(0)  # each docstring from the same state, whatever ran before it
        runner.run(test)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("module", _modules())
def test_examples_run(module):
    tests = doctest.DocTestFinder(exclude_empty=True).find(importlib.import_module(module))
    result = _run(tests)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {module} fail (run doctest on it)"


@pytest.mark.parametrize("name", MUST_SHOW)
def test_the_first_names_have_examples(name):
    module_name, _, attr = name.rpartition(".")
    try:
        obj = importlib.import_module(module_name)
        attr_path = [attr]
    except ModuleNotFoundError:
        module_name, _, owner = module_name.rpartition(".")
        obj = importlib.import_module(module_name)
        attr_path = [owner, attr]
    for part in attr_path:
        obj = getattr(obj, part)
    tests = [t for t in doctest.DocTestFinder(recurse=False).find(obj, name) if t.examples]
    assert tests, f"{name} has no >>> example"


def test_a_wrong_example_is_flagged():
    """Control: the runner above fails an example whose shown output is wrong."""

    def wrong():
        """>>> 1 + 1
        3
        """

    tests = doctest.DocTestFinder().find(wrong, "wrong", globs={})
    assert _run(tests).failed == 1
