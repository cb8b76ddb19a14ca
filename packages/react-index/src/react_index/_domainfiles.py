# Vendored from vendor/domainfiles.py by `nox -s vendor`. Do not edit this copy; edit the source.
"""Domain files, read one way in every package: class names (with synonyms), prompt templates, synonyms.

Vendored into every package as `_domainfiles.py` by `nox -s vendor` (edit this source, never a
copy); `domains.json` (built-in sets, see vendor/make_domains.py) is vendored beside it.

Formats (docs/react-index.md, "Domain files"):
- a built-in set name (`imagenet1k`, `openai_imagenet`, `pets`, …);
- `.txt`: one entry per line; blank lines and lines starting with `#` are ignored; surrounding spaces trimmed;
- `.json`: a list of strings; for classes also an object `{class: [synonyms]}` (or `{class: "synonym"}`);
- synonyms: a `.json` object `{class: [synonyms]}`, or a `.txt` file of `class: synonym, synonym` lines.
- concept frequency (`react-index frequency --out`): `.csv` with columns class_name, count and either
  most_frequent or names (a JSON object {name: count}), or `.json` {"classes": [rows]} (or a bare list of rows).
Templates mark the class with `{}` or `{c}`. Every error names the file and the line (or list entry).
Duplicated class names and templates are refused: they would silently double an entry's weight.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import unicodedata
from dataclasses import dataclass
from importlib import resources

import fsspec

from ._manifests import UserError

DEFAULT_TEMPLATES = "openai_imagenet"


class DomainError(UserError):
    """Class names, templates or synonyms that cannot be used."""


@dataclass(frozen=True)
class TargetClass:
    """A class of the target domain: its `name` and the `synonyms` also queried (and counted) for it."""

    name: str
    synonyms: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.synonyms)


@functools.cache
def builtin() -> dict:
    """The built-in sets: {"templates": {name: [...]}, "classnames": {name: [...]}, "metrics": {...}}."""
    return json.loads(resources.files(__package__).joinpath("domains.json").read_text(encoding="utf-8"))


def _read_text(uri: str) -> str:
    try:
        with fsspec.open(uri, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DomainError(f"{uri}: no such file") from None
    except IsADirectoryError:
        raise DomainError(f"{uri}: is a folder; pass a .txt or .json file") from None
    try:
        return unicodedata.normalize("NFC", data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise DomainError(f"{uri}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None


def _is_json(uri: str) -> bool:
    return uri.lower().endswith(".json")


def _json(uri: str, text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DomainError(f"{uri}: line {e.lineno}: not valid JSON ({e.msg})") from None


def read_entries(uri: str) -> list[tuple[str, str]]:
    """(where, text) of every entry of a .txt (one per line) or .json list file; `where` is 'line N' or 'entry N'."""
    text = _read_text(uri)
    if _is_json(uri):
        data = _json(uri, text)
        if not isinstance(data, list):
            raise DomainError(f"{uri}: expected a JSON list of strings, got a {type(data).__name__}")
        entries = []
        for i, item in enumerate(data, 1):
            if not isinstance(item, str):
                raise DomainError(f"{uri}: entry {i} is {json.dumps(item)[:60]}, expected a string")
            if item.strip():
                entries.append((f"entry {i}", item.strip()))
        return entries
    return [(f"line {i}", line.strip()) for i, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]


def _refuse_duplicates(uri: str, entries: list[tuple[str, str]], what: str) -> None:
    first: dict[str, str] = {}
    for where, value in entries:
        if value in first:
            raise DomainError(f"{uri}: {where}: {what} {value!r} repeats {first[value]}; each {what} must appear once")
        first[value] = where


def _check_templates(source: str, entries: list[tuple[str, str]]) -> list[str]:
    templates = [(where, t.replace("{}", "{c}")) for where, t in entries]
    for where, t in templates:
        if "{c}" not in t:
            raise DomainError(f"{source}: {where}: template {t!r} has no {{}} or {{c}} where the class name goes")
    _refuse_duplicates(source, templates, "template")
    return [t for _, t in templates]


def load_templates(spec: str | None = None, fallback: list[str] | None = None) -> list[str]:
    """Templates from a built-in set name or a file; None gives `fallback` (e.g. a dataset's own templates), else
    the 80 OpenAI ImageNet templates. `{}` is rewritten to `{c}`."""
    if spec is None:
        if fallback:
            return _check_templates("the dataset's templates", [(f"entry {i}", t) for i, t in enumerate(fallback, 1)])
        spec = DEFAULT_TEMPLATES
    if spec in builtin()["templates"]:
        return [t.replace("{}", "{c}") for t in builtin()["templates"][spec]]
    if "/" not in spec and "." not in spec:
        names = ", ".join(sorted(builtin()["templates"]))
        raise DomainError(f"unknown template set {spec!r}; built-in sets: {names}; or pass a .txt/.json file")
    entries = read_entries(spec)
    if not entries:
        raise DomainError(f"{spec}: no templates in this file")
    return _check_templates(spec, entries)


def _synonym_list(uri: str, name: str, value) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise DomainError(f"{uri}: class {name!r}: synonyms must be a string or a list of strings")
    out = []
    for v in (v.strip() for v in values):
        if v and v != name and v not in out:
            out.append(v)
    return tuple(out)


def load_classes(spec: str) -> list[TargetClass]:
    """Class names from a built-in set, a .txt file (one per line), a JSON list, or a JSON object
    {class: [synonyms]}. Names must be distinct."""
    if spec in builtin()["classnames"]:
        return [TargetClass(n) for n in builtin()["classnames"][spec]]
    if "/" not in spec and "." not in spec:
        raise DomainError(f"unknown class set {spec!r}; built-in sets: {', '.join(sorted(builtin()['classnames']))}; "
                          "or pass a .txt/.json file")
    if _is_json(spec):
        data = _json(spec, _read_text(spec))
        if isinstance(data, dict):
            entries = [(f"key {i}", str(k).strip()) for i, k in enumerate(data, 1)]
            synonyms = {str(k).strip(): _synonym_list(spec, str(k), v) for k, v in data.items()}
        else:
            entries, synonyms = read_entries(spec), {}
    else:
        entries, synonyms = read_entries(spec), {}
    for where, name in entries:
        if not name:
            raise DomainError(f"{spec}: {where}: empty class name")
    if not entries:
        raise DomainError(f"{spec}: no class names in this file")
    _refuse_duplicates(spec, entries, "class name")
    return [TargetClass(name, synonyms.get(name, ())) for _, name in entries]


def load_synonyms(spec: str) -> dict[str, tuple[str, ...]]:
    """{class: synonyms} from a JSON object or a .txt file of `class: synonym, synonym` lines."""
    if _is_json(spec):
        data = _json(spec, _read_text(spec))
        if not isinstance(data, dict):
            raise DomainError(f"{spec}: expected a JSON object {{class: [synonyms]}}")
        return {str(k).strip(): _synonym_list(spec, str(k), v) for k, v in data.items()}
    out: dict[str, tuple[str, ...]] = {}
    for where, line in read_entries(spec):
        name, sep, rest = line.partition(":")
        if not sep or not name.strip():
            raise DomainError(f"{spec}: {where}: expected 'class: synonym, synonym', got {line!r}")
        if name.strip() in out:
            raise DomainError(f"{spec}: {where}: class {name.strip()!r} appears twice")
        out[name.strip()] = _synonym_list(spec, name, [s for s in rest.split(",")])
    return out


def with_synonyms(classes: list[TargetClass], synonyms: dict[str, tuple[str, ...]], where: str) -> list[TargetClass]:
    """Add synonyms to classes by name; a synonym entry for a class not in the list is an error (a typo)."""
    unknown = sorted(set(synonyms) - {c.name for c in classes})
    if unknown:
        raise DomainError(f"{where}: synonyms given for unknown class(es): {', '.join(map(repr, unknown[:5]))}")
    return [TargetClass(c.name, _synonym_list(where, c.name, [*c.synonyms, *synonyms.get(c.name, ())]))
            for c in classes]


def prompts(classes: list[TargetClass], templates: list[str]) -> list[tuple[int, str, str]]:
    """(class index, template, prompt text) for every class name or synonym under every template."""
    return [(i, t, t.replace("{c}", name)) for i, c in enumerate(classes) for name in c.names for t in templates]


def _frequency_row(uri: str, where: str, row) -> tuple[str, dict[str, int], str | None]:
    if not isinstance(row, dict):
        raise DomainError(f"{uri}: {where}: expected an object with class_name and count")
    name = row.get("class_name")
    if not isinstance(name, str) or not name.strip():
        raise DomainError(f"{uri}: {where}: 'class_name' is missing or empty")
    names = row.get("names")
    if isinstance(names, str) and names.strip():
        try:
            names = json.loads(names)
        except json.JSONDecodeError:
            raise DomainError(f"{uri}: {where}: column 'names' is not a JSON object {{name: count}}") from None
    if names in (None, ""):
        names = {}
    if not isinstance(names, dict) or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                                              for k, v in names.items()):
        raise DomainError(f"{uri}: {where}: 'names' must be an object {{name: count}} with integer counts")
    best = row.get("most_frequent")
    if best is not None and (not isinstance(best, str) or not best.strip()):
        best = None
    return name.strip(), names, best.strip() if best else None


def load_frequency(uri: str) -> dict[str, tuple[str, dict[str, int]]]:
    """{class: (most frequent name, {name: count})} from a concept-frequency file (`react-index frequency --out`,
    .csv or .json). The most frequent name is the file's `most_frequent`, else the name with the highest count
    in `names` (ties: the first listed), else the class name itself."""
    if not uri.lower().endswith((".csv", ".json")):
        raise DomainError(f"{uri}: a frequency file must be .csv or .json (react-index frequency --out)")
    text = _read_text(uri)
    rows: list[tuple[str, object]] = []
    if _is_json(uri):
        data = _json(uri, text)
        if isinstance(data, dict):
            data = data.get("classes")
        if not isinstance(data, list):
            raise DomainError(f"{uri}: expected {{\"classes\": [rows]}} or a JSON list of rows with class_name and "
                              "count (write it with react-index frequency --out FILE.json)")
        rows = [(f"entry {i}", r) for i, r in enumerate(data, 1)]
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "class_name" not in reader.fieldnames:
            raise DomainError(f"{uri}: line 1: no 'class_name' column (write it with react-index frequency --out "
                              "FILE.csv)")
        if "most_frequent" not in reader.fieldnames and "names" not in reader.fieldnames:
            raise DomainError(f"{uri}: line 1: needs a 'most_frequent' or a 'names' column")
        rows = [(f"line {i}", r) for i, r in enumerate(reader, 2)]
    out: dict[str, tuple[str, dict[str, int]]] = {}
    first: dict[str, str] = {}
    for where, row in rows:
        name, names, best = _frequency_row(uri, where, row)
        if name in first:
            raise DomainError(f"{uri}: {where}: class {name!r} repeats {first[name]}; each class must appear once")
        first[name] = where
        if best is None:
            best = max(names, key=lambda n: names[n]) if names else name
        out[name] = (best, names)
    if not out:
        raise DomainError(f"{uri}: no classes in this frequency file")
    return out


def most_frequent_names(uri: str, classes: list[TargetClass] | None = None) -> dict[str, str]:
    """{class: its most frequent name} (REAL-Prompt, `--prompt-names most-frequent --frequency FILE`). With
    `classes`, every class must be in the file (a class it lacks would silently keep its own name)."""
    freq = load_frequency(uri)
    if classes is not None:
        missing = [c.name for c in classes if c.name not in freq]
        if missing:
            raise DomainError(f"{uri}: no row for class(es) {', '.join(map(repr, missing[:5]))}"
                              f"{' …' if len(missing) > 5 else ''}; count the same classes (react-index frequency "
                              "--classes …)")
    return {name: best for name, (best, _) in freq.items()}


PROMPT_NAMES = ("as-given", "most-frequent")


def prompt_classes(classes: list[TargetClass], prompt_names: str = "as-given",
                   frequency: str | None = None) -> list[TargetClass]:
    """The names prompts are built from, one entry per class in order. "as-given": each class with its synonyms
    (every name prompted); "most-frequent" (REAL-Prompt, Parashar et al. 2024): only the class's most frequent name
    in the pretraining captions, from `frequency` (a `react-index frequency --out` file). The class a prompt
    belongs to — and what results are labelled with — stays the class's own name."""
    if prompt_names not in PROMPT_NAMES:
        raise DomainError(f"--prompt-names {prompt_names!r} is unknown; choose from {', '.join(PROMPT_NAMES)}")
    if prompt_names == "as-given":
        if frequency:
            raise DomainError("--frequency is read by --prompt-names most-frequent only; add that or drop --frequency")
        return classes
    if not frequency:
        raise DomainError("--prompt-names most-frequent needs --frequency FILE (write one with react-index frequency "
                          "--index DIR --classes FILE --out FILE.csv)")
    best = most_frequent_names(frequency, classes)
    return [TargetClass(best[c.name]) for c in classes]
