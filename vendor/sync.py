"""Copy the shared pieces in vendor/ into the packages that use them (run by `nox -s vendor`).

- manifests.py → `_manifests.py` in every package (the manifest contract);
- domains.json → `domains.json` in react-index and react-eval (built-in class names, templates, metrics).

`--check` exits non-zero when a copy differs from what this script would write.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = "# Vendored from vendor/manifests.py by `nox -s vendor`. Do not edit this copy; edit the source.\n"


def _pkg(name: str) -> Path:
    return ROOT / f"packages/react-{name}/src/react_{name}"


COPIES = [(ROOT / "vendor" / "manifests.py", _pkg(n) / "_manifests.py", HEADER) for n in ("index", "tune", "eval")]
COPIES += [(ROOT / "vendor" / "domains.json", _pkg(n) / "domains.json", "") for n in ("index", "eval")]


def main(argv=sys.argv[1:]) -> int:
    stale = [(src, dst, head) for src, dst, head in COPIES
             if not dst.exists() or dst.read_text() != head + src.read_text()]
    if "--check" in argv:
        for src, dst, _ in stale:
            print(f"{dst.relative_to(ROOT)} differs from {src.relative_to(ROOT)}; run `nox -s vendor`")
        return 1 if stale else 0
    for src, dst, head in stale:
        dst.write_text(head + src.read_text())
        print(f"wrote {dst.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
