"""Caption matching at 10M captions: react-index's engine (pyahocorasick over Arrow batches) vs DuckDB over the
parquet (tokenise + join) vs pure Python (tokenise + dict look-up), counting the captions that mention each of
~1,000 classes × 3 names (whole words, plurals, two-word phrases).

    python benchmarks/bench_captions.py --out /tmp/captions10m [--rows 10000000] [--subset 1000000]

Generates synthetic captions once (10 parquet parts of 1M; a Zipf vocabulary of 50,000 words with a long tail,
6–16 words a caption, some capitalised, plural or followed by punctuation), then runs each engine in its own
process (its peak RSS is its own VmHWM): aho (react-index) and duckdb at the full size and at the subset, python at
the subset. Every engine's per-name counts must agree with react-index's on the subset. Prints one JSON line per run
and a summary table; delete --out afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PART_ROWS = 1_000_000
VOCAB = 50_000
N_CLASSES = 1_000
LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


def vocabulary(rng) -> list[str]:
    words: set[str] = set()
    while len(words) < VOCAB:
        n = int(rng.integers(3, 10))
        w = "".join(rng.choice(LETTERS, n))
        if not w.endswith("s"):
            words.add(w)
    return sorted(words)


def token_table(vocab: list[str]) -> pa.Array:
    """Every word in 4 spellings (plain, plural, Capitalised, followed by a comma): token id = word * 4 + variant."""
    out = []
    for w in vocab:
        plural = w[:-1] + "ies" if w.endswith("y") and w[-2] not in "aeiou" else \
            w + "es" if w.endswith(("x", "z", "ch", "sh", "o")) else w + "s"
        out += [w, plural, w.capitalize(), w + ","]
    return pa.array(out, pa.string())


def generate(out: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    vocab = vocabulary(rng)
    tokens = token_table(vocab)
    ranks = np.arange(1, VOCAB + 1, dtype=np.float64)
    p = ranks ** -1.05
    p /= p.sum()
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab))
    for part in range(0, rows, PART_ROWS):
        path = out / f"metadata_{part // PART_ROWS:03d}.parquet"
        if path.exists():
            continue
        n = min(PART_ROWS, rows - part)
        lengths = rng.integers(6, 17, n)
        words = rng.choice(VOCAB, int(lengths.sum()), p=p)
        variant = rng.choice(4, len(words), p=[0.8, 0.1, 0.06, 0.04])
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        lists = pa.ListArray.from_arrays(pa.array(offsets), tokens.take(pa.array(words * 4 + variant)))
        pq.write_table(pa.table({"caption": pc.binary_join(lists, " ")}), path, row_group_size=65536)
    print(f"captions in {out}", file=sys.stderr)


def classes(out: Path):
    """1,000 classes, names from the upper middle of the vocabulary to its tail (log-uniform ranks 200…50,000: the
    commonest name is in ≈ 0.5 % of captions, as a common ImageNet class in LAION), each with 2 synonyms, one a
    two-word phrase."""
    from react_index.domain import TargetClass

    vocab = json.loads((out / "vocab.json").read_text())
    rng = np.random.default_rng(1)
    pick = lambda: vocab[int(np.exp(rng.uniform(np.log(200), np.log(VOCAB - 1))))]  # noqa: E731
    out_classes, seen = [], set()
    while len(out_classes) < N_CLASSES:
        name = pick()
        if name in seen:
            continue
        seen.add(name)
        syn = [pick(), f"{pick()} {pick()}"]
        out_classes.append(TargetClass(name, tuple(s for s in dict.fromkeys(syn) if s != name)))
    return out_classes


def parts(out: Path, rows: int) -> list[Path]:
    return sorted(out.glob("metadata_*.parquet"))[: -(-rows // PART_ROWS)]


def batches(out: Path, rows: int):
    first = 0
    for path in parts(out, rows):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536, columns=["caption"]):
            if first >= rows:
                return
            column = batch.column(0).slice(0, rows - first)
            yield first, column
            first += len(column)


def run_aho(out: Path, rows: int, cls) -> dict:
    from react_index.captions import match_batches

    matches = match_batches(batches(out, rows), cls)
    return {"pairs": len(matches.rows), "name_counts": np.bincount(matches.names, minlength=len(matches.matcher.names)
                                                                     ).tolist()}


def _forms(cls):
    from react_index.captions import name_forms, normalize_all

    names = [n for c in cls for n in c.names]
    bases = normalize_all(names)
    return names, [(form, i) for i, n in enumerate(names) for form in name_forms(n, bases[i])]


def run_duckdb(out: Path, rows: int, cls) -> dict:
    import duckdb

    names, forms = _forms(cls)
    con = duckdb.connect()
    con.execute("SET threads TO 2; SET memory_limit = '4GB'; SET preserve_insertion_order = false")
    con.execute("CREATE TABLE forms(form VARCHAR, name_id INTEGER)")
    con.executemany("INSERT INTO forms VALUES (?, ?)", forms)
    files = [str(p) for p in parts(out, rows)]
    # tokens (letters/marks/digits, lower-cased), then unigrams and bigrams joined against every name form
    counts = con.execute(f"""
        WITH c AS (SELECT row_number() OVER () AS row_id, caption FROM read_parquet({files}) LIMIT {rows}),
        t AS (SELECT row_id, string_split(trim(regexp_replace(lower(caption), '[^\\p{{L}}\\p{{M}}\\p{{N}}]+', ' ',
                                                                  'g')), ' ') AS w FROM c),
        terms AS (SELECT row_id, unnest(list_concat(w, list_transform(range(1, len(w)),
                                                     lambda i: w[i] || ' ' || w[i + 1]))) AS term FROM t),
        hits AS (SELECT DISTINCT row_id, name_id FROM terms JOIN forms ON term = form)
        SELECT name_id, count(*) FROM hits GROUP BY name_id""").fetchall()
    name_counts = [0] * len(names)
    for i, n in counts:
        name_counts[i] = n
    return {"pairs": sum(name_counts), "name_counts": name_counts}


def run_python(out: Path, rows: int, cls) -> dict:
    """Pure Python: casefold, split into words, look every word and word pair up in a dict of name forms."""
    names, forms = _forms(cls)
    by_form: dict[str, list[int]] = {}
    for form, i in forms:
        by_form.setdefault(form, []).append(i)
    word = re.compile(r"[^\W_]+")
    name_counts = [0] * len(names)
    for _, captions in batches(out, rows):
        for caption in captions.to_pylist():
            w = word.findall((caption or "").casefold())
            hit = set()
            for i, t in enumerate(w):
                hit.update(by_form.get(t, ()))
                if i + 1 < len(w):
                    hit.update(by_form.get(t + " " + w[i + 1], ()))
            for i in hit:
                name_counts[i] += 1
    return {"pairs": sum(name_counts), "name_counts": name_counts}


ENGINES = {"aho": run_aho, "duckdb": run_duckdb, "python": run_python}


def _peak_rss_mb() -> int:
    """This process's own peak RSS (VmHWM: reset at exec, so the parent's size at fork does not count)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def one(args) -> None:
    cls = classes(args.out)
    t = time.perf_counter()
    result = ENGINES[args.engine](args.out, args.rows, cls)
    seconds = time.perf_counter() - t
    result.update(engine=args.engine, rows=args.rows, seconds=round(seconds, 1),
                  captions_per_s=round(args.rows / seconds), peak_rss_mb=_peak_rss_mb(),
                  names=sum(len(c.names) for c in cls))
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--subset", type=int, default=1_000_000)
    ap.add_argument("--engine", choices=ENGINES)
    ap.add_argument("--runs", default="aho:full,duckdb:full,aho:subset,duckdb:subset,python:subset")
    args = ap.parse_args()
    if args.engine:
        return one(args)
    t = time.perf_counter()
    generate(args.out, args.rows)
    print(f"generated {args.rows:,} captions in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    results = []
    for run in args.runs.split(","):
        engine, size = run.split(":")
        rows = args.rows if size == "full" else args.subset
        line = subprocess.run([sys.executable, __file__, "--out", str(args.out), "--rows", str(rows), "--engine",
                               engine], check=True, capture_output=True, text=True, env=os.environ).stdout
        results.append(json.loads(line.strip().splitlines()[-1]))
        r = results[-1]
        print(json.dumps({k: v for k, v in r.items() if k != "name_counts"}), flush=True)
    reference = {r["rows"]: r["name_counts"] for r in results if r["engine"] == "aho"}
    for r in results:
        if r["rows"] in reference:
            same = r["name_counts"] == reference[r["rows"]]
            print(f"{r['engine']:>7} {r['rows']:>11,} captions  {r['seconds']:>8.1f} s  {r['captions_per_s']:>10,}/s  "
                  f"peak RSS {r['peak_rss_mb']:>6,} MB  {r['pairs']:>11,} (caption, name) pairs  "
                  f"counts {'= aho' if same else '≠ aho'}")


if __name__ == "__main__":
    main()
