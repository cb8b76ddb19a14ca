"""Run the speed benchmarks (`python3 -m nox -s bench`): every benchmarks/bench_*.py module's
`run(out_dir) -> dict`, side by side with its peer tool; all results go to bench-out/results.json.

    python benchmarks/run.py [NAME ...]     run only the named benchmarks (e.g. p1_build)
"""

import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "bench-out"


def main(names: list[str]) -> int:
    modules = sorted(HERE.glob("bench_*.py"))
    if names:
        modules = [m for m in modules if m.stem.removeprefix("bench_") in names]
    if not modules:
        print("no benchmarks match" if names else "no benchmarks registered yet (benchmarks/bench_*.py)")
        return 1 if names else 0
    OUT.mkdir(exist_ok=True)
    results_file = OUT / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for path in modules:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        name = path.stem.removeprefix("bench_")
        t0 = time.perf_counter()
        print(f"== {name}")
        results[name] = module.run(OUT / name) | {"wall_s": round(time.perf_counter() - t0, 1)}
        print(json.dumps(results[name], indent=2))
        results_file.write_text(json.dumps(results, indent=2))
    print(f"results -> {results_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
