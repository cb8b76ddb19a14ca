"""Copy vendor/manifests.py into each package as `_manifests.py` (run by `nox -s vendor`).

`--check` exits non-zero when a copy differs from what this script would write.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "vendor" / "manifests.py"
HEADER = "# Vendored from vendor/manifests.py by `nox -s vendor`. Do not edit this copy; edit the source.\n"
TARGETS = [ROOT / f"packages/react-{name}/src/react_{name}/_manifests.py" for name in ("index", "tune", "eval")]


def expected() -> str:
    return HEADER + SOURCE.read_text()


def main(argv=sys.argv[1:]) -> int:
    stale = [t for t in TARGETS if not t.exists() or t.read_text() != expected()]
    if "--check" in argv:
        for t in stale:
            print(f"{t.relative_to(ROOT)} differs from vendor/manifests.py; run `nox -s vendor`")
        return 1 if stale else 0
    for t in stale:
        t.write_text(expected())
        print(f"wrote {t.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
