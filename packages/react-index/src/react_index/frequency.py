"""Concept frequency (REAL, "The Neglected Tails in Vision-Language Models"): how many captions mention each class
and each of its names, matched as caption retrieval matches them (captions.py).

A class's `count` is the number of captions that mention any of its names; each name's count is the number of
captions that mention that name (so the names' counts can sum to more than the class's). The most frequent name
is the one with the highest count, ties going to the earlier name (the class name first, then its synonyms in
order); REAL-Prompt prompts with it.

Tail classes: a class is flagged `tail` when its count is at or below the TAIL_QUANTILE (20 %) quantile of all
classes' counts, or below TAIL_MIN (10) captions, whichever flags more. The quantile makes "tail" relative to
the domain (REAL's tails are the rarest concepts of a domain); the floor keeps a class that almost never
appears flagged even in a small domain.

Files (`--out`), one row per class, sorted by count (descending; ties by class order as given):
- `.csv`: columns rank, class_name, count, fraction (count / captions scanned), tail (true/false),
  most_frequent, most_frequent_count, names — the per-name counts as a JSON object {name: count} in the
  class's name order (a CSV cell; one column per name would make a table as wide as the longest synonym list);
- `.json`: {"format": "react.concept-frequency", "version": 1, "captions": N, "tail_rule": "...",
  "classes": [rows with the same keys, `names` an object]}.
vendor/domainfiles.py's load_frequency / most_frequent_names read both.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass

import numpy as np

from ._manifests import UserError, write_bytes_atomic
from .captions import Matches

TAIL_QUANTILE = 0.2
TAIL_MIN = 10
FORMAT = "react.concept-frequency"
CSV_COLUMNS = ["rank", "class_name", "count", "fraction", "tail", "most_frequent", "most_frequent_count", "names"]


@dataclass
class ClassFrequency:
    rank: int
    class_name: str
    count: int
    fraction: float
    tail: bool
    most_frequent: str
    most_frequent_count: int
    names: dict[str, int]


@dataclass
class FrequencyTable:
    captions: int
    rows: list[ClassFrequency]  # sorted by count, descending
    tail_rule: str

    def most_frequent_names(self) -> dict[str, str]:
        return {r.class_name: r.most_frequent for r in self.rows}


def tail_threshold(counts: np.ndarray, quantile: float = TAIL_QUANTILE, minimum: int = TAIL_MIN) -> float:
    """Counts at or below this are tail: the `quantile` quantile of the counts (lower value), or minimum − 1."""
    if not len(counts):
        return minimum - 1
    return max(float(np.quantile(counts, quantile, method="lower")), minimum - 1)


def count_frequency(matches: Matches, quantile: float = TAIL_QUANTILE, minimum: int = TAIL_MIN) -> FrequencyTable:
    """The frequency table of a caption match (captions.match_store / match_batches)."""
    matcher = matches.matcher
    name_counts = np.bincount(matches.names, minlength=len(matcher.names))  # (row, name) pairs are unique
    class_counts = np.array([len(r) for r in matches.class_rows()], dtype=np.int64)
    threshold = tail_threshold(class_counts, quantile, minimum)
    by_class: list[dict[str, int]] = [{} for _ in matcher.classes]
    for ref, n in zip(matcher.names, name_counts.tolist(), strict=True):
        by_class[ref.class_index][ref.name] = n
    order = sorted(range(len(matcher.classes)), key=lambda c: (-class_counts[c], c))
    rows = []
    for rank, c in enumerate(order, 1):
        names = by_class[c]
        best = max(names, key=lambda n: names[n])  # max keeps the first of equals: the class name, then synonyms
        count = int(class_counts[c])
        rows.append(ClassFrequency(rank, matcher.classes[c].name, count,
                                   count / matches.captions if matches.captions else 0.0, bool(count <= threshold),
                                   best, int(names[best]), names))
    rule = (f"count <= {threshold:g}: the {quantile:g} quantile of the class counts, or fewer than {minimum} "
            "captions")
    return FrequencyTable(matches.captions, rows, rule)


def write_frequency(table: FrequencyTable, out: str) -> None:
    """Write the table as .csv or .json (by the extension), atomically."""
    lower = str(out).lower()
    if lower.endswith(".json"):
        doc = {"format": FORMAT, "version": 1, "captions": table.captions, "tail_rule": table.tail_rule,
               "classes": [asdict(r) for r in table.rows]}
        data = (json.dumps(doc, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    elif lower.endswith(".csv"):
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for r in table.rows:
            row = asdict(r)
            row["tail"] = "true" if r.tail else "false"
            row["names"] = json.dumps(r.names, ensure_ascii=False)
            writer.writerow([row[c] for c in CSV_COLUMNS])
        data = buf.getvalue().encode("utf-8")
    else:
        raise UserError(f"--out {out}: the frequency file must end in .csv or .json")
    write_bytes_atomic(str(out), data)


def format_table(table: FrequencyTable, limit: int | None = None) -> str:
    """The table as text: one line per class, most frequent first, tail classes marked."""
    rows = table.rows if limit is None else table.rows[:limit]
    width = max([10, *(len(r.class_name) for r in rows)])
    lines = [f"{'rank':>5}  {'class':<{width}}  {'captions':>10}  {'share':>8}  tail  most frequent name",
             *(f"{r.rank:>5}  {r.class_name:<{width}}  {r.count:>10,}  {r.fraction:>8.3%}  "
               f"{'tail' if r.tail else '    '}  {r.most_frequent} ({r.most_frequent_count:,})" for r in rows)]
    if limit is not None and len(table.rows) > limit:
        lines.append(f"… {len(table.rows) - limit} more classes")
    tails = sum(r.tail for r in table.rows)
    lines.append(f"{table.captions:,} captions, {len(table.rows)} classes, {tails} tail ({table.tail_rule})")
    return "\n".join(lines)


def concept_frequency(index_or_store, classes, *, quantile: float = TAIL_QUANTILE, minimum: int = TAIL_MIN,
                      ) -> FrequencyTable:
    """`react-index frequency`: how many captions of an index folder's store (or a store, or a Store) name each
    class and each of its synonyms (whole words, plurals: as caption retrieval matches them). Tail classes are those
    at or below the `quantile` of the class counts, or below `minimum` captions."""
    from .captions import match_store

    return count_frequency(match_store(index_or_store, classes), quantile, minimum)
