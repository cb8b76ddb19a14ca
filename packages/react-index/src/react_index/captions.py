"""Caption matching: which samples' captions name a class (REAL's concept frequency, Neural Priming's and REAL's
caption retrieval).

The rules (docs/react-index.md, "Caption retrieval and concept frequency"):

- Text is normalised the same way for captions and class names: Unicode NFC, every run of characters that are not
  letters, combining marks or digits (Unicode categories L*, M*, N*) becomes one space, then full Unicode case
  folding (`str.casefold`: "Straße" matches "STRASSE"). So punctuation, hyphens, underscores and apostrophes
  separate words ("hot-dog" is the phrase "hot dog"; "dog's" contains the word "dog").
- A name matches a caption when its words occur in the caption as whole, consecutive words (a multi-word name
  is a phrase; any whitespace or punctuation between its words in the caption is fine).
- Plurals: the last word of a name also matches in its simple English plural forms, when it ends in an ASCII
  letter a-z and has at least two letters: +s always; +es after s, x, z, ch, sh, o; y → ies after a consonant
  ("butterfly" → "butterflies"). Irregular plurals ("mouse"/"mice") are not generated: list them as synonyms.
  A name ending in any other letter ("café") matches only as written, so "café" matches "Café!" but not "cafés".
- Counting is per caption: a caption that names a class twice counts once for it.

Engine: an Aho-Corasick automaton (pyahocorasick, the `captions` extra) over every form of every name, padded
with spaces so only whole words match, run over a batch of normalised captions joined into one string (one
C-level pass per batch, no Python object per caption). benchmarks/bench_captions.py measures it against DuckDB
and a pure-Python regex (docs/benchmarks.md, "Caption matching at 10M"). No torch is needed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._manifests import MissingExtraError, UserError, manifest_uri
from .domain import TargetClass
from .manifest import INDEX, STORE, read_manifest
from .store import Store, index_store_uri, open_store

INSTALL = "pip install 'react-index[captions]'"
NON_WORD = r"[^\p{L}\p{M}\p{N}]+"  # RE2 (pyarrow): anything that is not a letter, a combining mark or a digit
BATCH_ROWS = 65536
_SIBILANT_OR_O = ("s", "x", "z", "ch", "sh", "o")
_VOWELS = "aeiou"


def _ahocorasick():
    try:
        import ahocorasick
    except ImportError:
        raise MissingExtraError(f"caption matching needs pyahocorasick: {INSTALL}") from None
    return ahocorasick


def _words(array: pa.Array) -> pa.Array:
    """NFC, and every run of non-word characters → one space (not yet case-folded; nulls → empty)."""
    array = pc.fill_null(array.cast(pa.string()) if array.type != pa.string() else array, "")
    return pc.replace_substring_regex(pc.utf8_normalize(array, "NFC"), NON_WORD, " ")


def normalize_all(texts: list[str]) -> list[str]:
    """Names or captions as matching sees them: NFC, words separated by single spaces, case-folded (one
    vectorised pass: the regular expression is compiled once)."""
    if not texts:
        return []
    return [" ".join(t.casefold().split()) for t in _words(pa.array(texts, pa.string())).to_pylist()]


def normalize(text: str) -> str:
    return normalize_all([text])[0]


def name_forms(name: str, normalized: str | None = None) -> tuple[str, ...]:
    """The normalised name and its plural forms (see the module's rules); () for a name with no words.
    `normalized`: normalize(name), when the caller has it already."""
    base = normalize(name) if normalized is None else normalized
    if not base:
        return ()
    head, _, last = base.rpartition(" ")
    prefix = head + " " if head else ""
    forms = [base]
    if len(last) >= 2 and "a" <= last[-1] <= "z":
        forms.append(prefix + last + "s")
        if last.endswith(_SIBILANT_OR_O):
            forms.append(prefix + last + "es")
        if last[-1] == "y" and last[-2] not in _VOWELS:
            forms.append(prefix + last[:-1] + "ies")
    return tuple(dict.fromkeys(forms))


@dataclass(frozen=True)
class NameRef:
    """One name of one class: `names[i]` of a CaptionMatcher (class index, the name as given)."""

    class_index: int
    name: str


class CaptionMatcher:
    """Every name (and synonym) of every class, compiled into one automaton; `match` finds which names each
    caption of a batch mentions."""

    def __init__(self, classes: list[TargetClass]):
        ahocorasick = _ahocorasick()
        self.classes = list(classes)
        self.names = [NameRef(ci, n) for ci, c in enumerate(self.classes) for n in c.names]
        self.name_class = np.array([r.class_index for r in self.names], dtype=np.int64)
        by_form: dict[str, list[int]] = {}
        bases = normalize_all([r.name for r in self.names])
        for ni, ref in enumerate(self.names):
            forms = name_forms(ref.name, bases[ni])
            if not forms:
                raise UserError(f"class {self.classes[ref.class_index].name!r}: name {ref.name!r} has no letters or "
                                "digits, so it can never match a caption; remove it")
            for form in forms:
                ids = by_form.setdefault(form, [])
                if ni not in ids:
                    ids.append(ni)
        self.automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        lengths, flat = [], []
        for pi, (form, ids) in enumerate(by_form.items()):
            self.automaton.add_word(f" {form} ", pi)
            lengths.append(len(ids))
            flat.extend(ids)
        self.automaton.make_automaton()
        # pattern id → its name ids (a form can be the name of several classes, or two names of one class)
        self._ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._names_of_pattern = np.array(flat, dtype=np.int64)

    def match(self, captions: pa.Array | list[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """(caption positions, name ids): every (caption, name) pair where the caption mentions the name, each pair
        once, sorted by caption then name id."""
        array = captions if isinstance(captions, (pa.Array, pa.ChunkedArray)) else pa.array(captions, pa.string())
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if len(array) == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        # " caption words \n" for every caption, one string for the batch; "\n" never survives _words
        joined = pc.binary_join_element_wise("", _words(array), "\n", " ")
        offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)[joined.offset:joined.offset + len(joined) + 1]
        text = joined.buffers()[2].to_pybytes()[offsets[0]:offsets[-1]].decode("utf-8").casefold()
        if text.isascii():
            codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
        else:
            codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        separators = np.flatnonzero(codes == 10)
        hits = np.fromiter(itertools.chain.from_iterable(self.automaton.iter(text)), dtype=np.int64)
        if not len(hits):
            return np.empty(0, np.int64), np.empty(0, np.int64)
        ends, patterns = hits[0::2], hits[1::2]
        caption = np.searchsorted(separators, ends)
        counts = self._ptr[patterns + 1] - self._ptr[patterns]
        caption = np.repeat(caption, counts)
        starts = np.repeat(self._ptr[patterns], counts)
        within = np.arange(len(caption)) - np.repeat(np.cumsum(counts) - counts, counts)
        names = self._names_of_pattern[starts + within]
        pairs = np.unique(caption * len(self.names) + names)
        return pairs // len(self.names), pairs % len(self.names)


def iter_captions(store: Store, batch_rows: int = BATCH_ROWS) -> Iterator[tuple[int, pa.Array]]:
    """(first store row, captions) over the whole store in row order, a batch at a time, as Arrow strings (an
    in-place store's clip-retrieval metadata mapped as on every read)."""
    start = 0
    for i, shard in enumerate(store.manifest["shards"]):
        column = store.metadata(i, columns=["caption"]).column("caption")
        for lo in range(0, len(column), batch_rows):
            yield start + lo, column.slice(lo, batch_rows).combine_chunks()
        start += shard["samples"]


@dataclass
class Matches:
    """Every (store row, name id) pair where the row's caption mentions the name; `matcher.names[name]` says which
    class and name. Rows ascending."""

    matcher: CaptionMatcher
    rows: np.ndarray
    names: np.ndarray
    captions: int  # captions scanned

    @property
    def classes(self) -> np.ndarray:
        return self.matcher.name_class[self.names]

    def class_rows(self) -> list[np.ndarray]:
        """Per class, the sorted store rows whose caption mentions any of its names."""
        n = len(self.matcher.classes)
        pairs = np.unique(self.classes * (self.captions + 1) + self.rows)
        cls, rows = pairs // (self.captions + 1), pairs % (self.captions + 1)
        bounds = np.searchsorted(cls, np.arange(n + 1))
        return [rows[bounds[c]:bounds[c + 1]] for c in range(n)]


def match_batches(batches: Iterable[tuple[int, pa.Array]], classes: list[TargetClass]) -> Matches:
    """Match every batch of (first row, captions) against the classes' names."""
    matcher = CaptionMatcher(classes)
    rows, names, total = [], [], 0
    for first, captions in batches:
        pos, name = matcher.match(captions)
        rows.append(pos + first)
        names.append(name)
        total = max(total, first + len(captions))
    return Matches(matcher, np.concatenate(rows) if rows else np.empty(0, np.int64),
                   np.concatenate(names) if names else np.empty(0, np.int64), total)


def resolve_store(path: str) -> Store:
    """The store of an index folder (the one it was built from) or a store folder itself."""
    path = str(path).rstrip("/")
    from ._manifests import read_json

    kind = read_json(manifest_uri(path)).get("kind")
    if kind == INDEX:
        manifest = read_manifest(manifest_uri(path), INDEX)
        store_uri = index_store_uri(path, manifest)
        store = open_store(store_uri)
        if manifest["lineage"] and store.manifest["id"] != manifest["lineage"][0]["id"]:
            raise UserError(f"{store_uri}: changed since the index {path} was built from it; rebuild the index "
                            f"(react-index build {store_uri} --out …)")
        return store
    if kind == STORE:
        return open_store(path)
    raise UserError(f"{manifest_uri(path)}: a {kind!r} manifest; pass an index folder or an embedding store folder")


def match_store(store: Store | str, classes: list[TargetClass], batch_rows: int = BATCH_ROWS) -> Matches:
    """Match every caption of a store (or of an index folder's store) against the classes' names."""
    store = resolve_store(store) if isinstance(store, str) else store
    return match_batches(iter_captions(store, batch_rows), classes)


def caption_candidates(index_or_store: str | Store, classes: list[TargetClass],
                       batch_rows: int = BATCH_ROWS) -> list[np.ndarray]:
    """Per class (in the order given), the sorted store rows whose caption names it: the candidates that
    `query --mode caption` ranks (see rank.rank_candidates)."""
    return match_store(index_or_store, classes, batch_rows).class_rows()

