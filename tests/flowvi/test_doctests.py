"""The library's docstring examples run and show what they print (doctest), and every public class of
``flowvi`` and ``flowvi.transforms`` documents its arguments with an example.

The examples assume ``import torch`` and ``import flowvi as fv`` (given to every docstring here); each
docstring starts from ``torch.manual_seed(0)``.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest
import torch

import flowvi
import flowvi.transforms

MODULES = sorted(m.name for m in pkgutil.walk_packages(flowvi.__path__, "flowvi."))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def examples(module_name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    return finder.find(module, module_name, extraglobs={"torch": torch, "fv": flowvi})


@pytest.mark.parametrize("name", ["flowvi", *MODULES])
def test_docstring_examples_run(name):
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in examples(name):
        torch.manual_seed(0)
        runner.run(test, out=report.append)
    assert flowvi.validation.validation_enabled()  # no example leaves the checks off
    assert runner.failures == 0, "".join(report)


def _public_classes() -> list[tuple[str, type]]:
    out = []
    for module in (flowvi, flowvi.transforms):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) and obj.__name__ != "set_validation":  # a function that is a context manager
                out.append((f"{module.__name__}.{name}", obj))
    return out


@pytest.mark.parametrize(("name", "cls"), _public_classes(), ids=[n for n, _ in _public_classes()])
def test_public_classes_document_arguments_with_an_example(name, cls):
    doc = inspect.getdoc(cls) or ""
    assert ">>>" in doc, f"{name}: no example in its docstring"
    if not issubclass(cls, Exception) and inspect.signature(cls).parameters:
        assert "Args:" in doc or "Attributes:" in doc or "Fields:" in doc, f"{name}: its arguments are not documented"


def test_the_doctests_are_found():
    """Guard: the runner above sees the examples (a wrong module walk would pass vacuously)."""
    found = sum(len(t.examples) for name in MODULES for t in examples(name))
    assert found >= 100
