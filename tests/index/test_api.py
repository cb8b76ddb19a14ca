"""The Python API: `from react_index import embed, build_index, retrieve, ...` works without torch, imports lazily,
takes keyword-only parameters past the first one or two, and documents every name."""

import inspect
import json
import subprocess
import sys

import react_index

FUNCTIONS = ["embed", "build_index", "add", "adopt", "retrieve", "open_index", "open_store", "load_classes",
             "load_templates", "download", "attach", "materialize", "inspect", "describe"]


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_react_index_loads_neither_torch_nor_faiss():
    got = _run("import sys, json, react_index; "
               "print(json.dumps({m: m in sys.modules for m in ('torch', 'faiss', 'open_clip', 'pyarrow')}))")
    assert got == {"torch": False, "faiss": False, "open_clip": False, "pyarrow": False}


def test_every_public_name_imports_without_torch():
    got = _run("import sys, json, react_index\n"
               "from react_index import *\n"
               "names = {n: type(getattr(react_index, n)).__name__ for n in react_index.__all__}\n"
               "print(json.dumps({'torch': 'torch' in sys.modules, 'names': names}))")
    assert not got["torch"]
    assert set(got["names"]) == set(react_index.__all__) and "module" not in got["names"].values()
    assert set(FUNCTIONS) <= set(react_index.__all__)
    for name in ("embed", "add", "adopt", "download", "attach", "materialize"):  # not the submodules of that name
        assert got["names"][name] == "function", name


def test_a_submodule_import_does_not_replace_the_function_of_its_name():
    got = _run("import json, react_index.embed, react_index.add\n"
               "from react_index import embed, add\n"
               "import sys\n"
               "print(json.dumps([callable(embed), embed.__module__, type(react_index.add).__name__, "
               "type(sys.modules['react_index.add']).__name__]))")
    assert got == [True, "react_index.embed", "function", "module"]


def test_parameters_past_the_first_two_are_keyword_only_and_everything_is_documented():
    for name in react_index.__all__:
        obj = getattr(react_index, name)
        assert inspect.getdoc(obj) and not inspect.getdoc(obj).startswith(name + "("), f"{name} has no docstring"
        if name not in FUNCTIONS:
            continue
        params = inspect.signature(obj).parameters.values()
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        assert len(positional) <= 2, (name, positional)
    assert list(inspect.signature(react_index.build_index).parameters)[:2] == ["store_uri", "out"]
    assert "recall_at" in inspect.signature(react_index.build_index).parameters
    assert inspect.signature(react_index.retrieve).parameters["out"].kind is inspect.Parameter.KEYWORD_ONLY
