"""Regenerate the op and block tables of ``docs/index.md`` from the registries.

    python docs/build_index.py          # rewrite the tables in place
    python docs/build_index.py --check  # exit 1 if they are out of date (the tests do this)

The tables sit between the ``<!-- registry:begin -->`` and ``<!-- registry:end -->`` markers;
everything else in ``docs/index.md`` is written by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

INDEX = Path(__file__).resolve().parent / "index.md"
BEGIN, END = "<!-- registry:begin -->", "<!-- registry:end -->"


def _first_line(fn) -> str:
    doc = (fn.__doc__ or "").strip().splitlines()
    return doc[0].strip().replace("|", "\\|") if doc else ""


def tables() -> str:
    from npattn.blocks import BLOCK_REGISTRY
    from npattn.ops import REGISTRY

    rows = ["| op | family | forward | derivation |", "|---|---|---|---|"]
    for name, spec in sorted(REGISTRY.items(), key=lambda kv: (kv[1].family, kv[0])):
        rows.append(f"| `{name}` | `npattn.ops.{spec.family}` | {_first_line(spec.forward)} "
                    f"| [{spec.doc}]({spec.doc}) |")
    rows += ["", "| block | class | what it computes | derivation |", "|---|---|---|---|"]
    for name, spec in BLOCK_REGISTRY.items():
        cls = type(spec.make(np.random.default_rng(0)))
        rows.append(f"| `{name}` | `{cls.__module__}.{cls.__name__}` | {_first_line(cls)} "
                    f"| [{spec.doc}]({spec.doc}) |")
    return "\n".join(rows)


def rebuilt(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{tables()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    text = INDEX.read_text()
    new = rebuilt(text)
    if "--check" in argv:
        if new != text:
            print("docs/index.md is out of date: run `python docs/build_index.py`", file=sys.stderr)
            return 1
        return 0
    INDEX.write_text(new)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(INDEX.parent.parent))
    sys.exit(main(sys.argv[1:]))
