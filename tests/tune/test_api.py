"""`from react_tune import train, TrainConfig, load_model`: importable without loading torch, keyword-only past
the first parameter, documented; `train` takes a TrainConfig or its fields by keyword."""

import importlib
import inspect
import subprocess
import sys

import pytest

import react_tune


def test_the_package_imports_without_torch():
    code = ("import sys, react_tune; assert 'torch' not in sys.modules, 'import react_tune loaded torch'; "
            "print(sorted(react_tune.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "train" in out and "TrainConfig" in out and "load_model" in out


@pytest.mark.parametrize("name", react_tune.__all__)
def test_public_names_are_documented_and_keyword_only(name):
    obj = getattr(react_tune, name)
    assert inspect.getdoc(obj), f"react_tune.{name} has no docstring"
    if inspect.isfunction(obj):
        positional = [p for p in inspect.signature(obj).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        assert len(positional) <= 2, f"react_tune.{name}{inspect.signature(obj)}"


def test_train_is_the_function_and_takes_a_config_or_keywords(monkeypatch):
    assert inspect.isfunction(react_tune.train)
    importlib.import_module("react_tune.train")  # importing the submodule must not replace the function
    assert inspect.isfunction(react_tune.train)
    with pytest.raises(TypeError, match="not both"):
        react_tune.train(react_tune.TrainConfig(retrieval="x", model="m", out="o"), steps=1)
    with pytest.raises(TypeError):  # fields are keyword-only
        react_tune.TrainConfig("x", "m", None, "o")
    with pytest.raises(react_tune.UserError, match="--steps must be a positive integer"):
        react_tune.train(retrieval="x", model="m", out="o", steps=0)
