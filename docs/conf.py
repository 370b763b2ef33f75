"""Sphinx configuration of the flow_escnn documentation.

Build (warnings are errors)::

    bash scripts/docs.sh
    # or, in a prepared environment:
    sphinx-build -W --keep-going -b html docs docs/_build/html

Conventions (the same as escnn's documentation): ``sphinx.ext.autodoc`` for the API
reference, ``sphinx.ext.napoleon`` for Google-style docstrings, ``sphinx.ext.mathjax`` for
the math, a builtin theme and no extra packages.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# escnn warns at import time when py3nj (SO(3) only) is missing; flow_escnn silences that
# single warning itself, but autodoc may import escnn first.
warnings.filterwarnings("ignore", message=r"`py3nj` package not found", category=UserWarning)

import flow_escnn  # noqa: E402

project = "flow_escnn"
author = "flow_escnn developers"
copyright = "flow_escnn developers"  # noqa: A001 - Sphinx's name
version = flow_escnn.__version__
release = flow_escnn.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]
root_doc = "index"
templates_path: list = []

# -- autodoc / napoleon --------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Shapes:" is the package's section for tensor layouts (torch-style docstrings)
napoleon_custom_sections = ["Shapes"]

# -- HTML ------------------------------------------------------------------------------------------
html_theme = "alabaster"
html_static_path: list = []
html_title = f"flow_escnn {release}"
html_theme_options = {
    "description": "Flow-equivariant recurrent networks on top of escnn",
    "fixed_sidebar": False,
}


# -- re-exported names -----------------------------------------------------------------------------
def _resolve_reexport(app, env, node, contnode):  # type: ignore[no-untyped-def]
    """Resolve ``flow_escnn.nn.FERNN`` to where it is documented (``flow_escnn.nn._sequence.FERNN``).

    The docstrings refer to public objects by their short, re-exported path; the API pages
    document each object once, in the module that defines it. Unresolvable names are left to
    Sphinx (which renders them as plain text).
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip(".~")
    if not target.startswith("flow_escnn."):
        # a short name inside a module docstring, e.g. :func:`check_flow_equivariance` in flow_escnn.checks
        context = node.get("py:module") or ""
        if not context.startswith("flow_escnn"):
            return None
        if node.get("py:class"):
            target = f"{context}.{node.get('py:class')}.{target}"
            found = _resolve_reexport_target(app, env, node, contnode, target)
            if found is not None:
                return found
            target = node.get("reftarget", "").lstrip(".~")
        target = f"{context}.{target}"
    return _resolve_reexport_target(app, env, node, contnode, target)


def _resolve_reexport_target(app, env, node, contnode, target):  # type: ignore[no-untyped-def]
    parts = target.split(".")
    obj = None
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        break
    domain = env.get_domain("py")
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if module and qualname:
        canonical = f"{module}.{qualname}"
    else:
        # data (e.g. DEFAULT_TOLERANCES): the unique documented name under the same package
        package = ".".join(parts[:2])
        hits = [n for n in domain.objects if n.startswith(package + ".") and n.endswith("." + parts[-1])]
        if len(hits) != 1:
            return None
        canonical = hits[0]
    if canonical == target:
        return None
    for typ in ("class", "func", "meth", "attr", "data", "exc", "obj"):
        resolved = domain.resolve_xref(env, node.get("refdoc"), app.builder, typ, canonical, node, contnode)
        if resolved is not None:
            return resolved
    return None


def _skip_namedtuple_fields(app, what, name, obj, skip, options):  # type: ignore[no-untyped-def]
    """Skip the automatic ``Alias for field number N`` members of NamedTuples.

    Their fields are documented in the class docstring's ``Attributes:`` section already;
    documenting them twice is a duplicate-object warning (an error under ``-W``).
    """
    doc = getattr(obj, "__doc__", None)
    if isinstance(doc, str) and doc.startswith("Alias for field number"):
        return True
    return None


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("missing-reference", _resolve_reexport)
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    return {"parallel_read_safe": True}
