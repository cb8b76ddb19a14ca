"""The README's main job on the toy world (run it with `python3 -m nox -s demo`).

Today it runs the steps that exist: generating the toy world. Each later step of the pipeline
(react-index build/query, react-tune train, react-eval run/report) is added here as it lands.
A rerun reuses what exists.
"""

import argparse
import json
import time
from pathlib import Path

from toyworld import write_world


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    parser.add_argument("--preset", default="demo")
    args = parser.parse_args()
    out = Path(args.out)

    t0 = time.perf_counter()
    write_world(out / "world", args.preset)
    print(f"[1/1] toy world        -> {out / 'world'}  ({time.perf_counter() - t0:.1f}s)")

    summary = json.loads((out / "world" / "corpus" / "toyworld.json").read_text())
    counts, n = summary["shape_counts"], summary["n_samples"]
    print(f"\nweb corpus: {n} image-text pairs in {len(summary['shards'])} shards; concept frequencies:")
    print(f"  {'shape':<12}{'pairs':>7}{'share':>8}")
    for shape, c in counts.items():
        print(f"  {shape:<12}{c:>7}{100 * c / n:>7.1f}%")
    print("\nSteps not yet in the demo (their packages have not landed): react-index build/query, "
          "react-tune train, react-eval run/report.")


if __name__ == "__main__":
    main()
