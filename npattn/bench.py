"""``python -m npattn bench``: runs the benchmark suite that lives in ``benchmarks/suite.py``.

The suite stays beside the package (the architecture keeps measurements in ``benchmarks/``);
this command finds it in the checkout npattn was installed from (``pip install -e .``).
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "suite.py").is_file():
        print("npattn bench: benchmarks/suite.py not found; run from a checkout installed with "
              "`pip install -e .`", file=sys.stderr)
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks import suite
    return suite.main(argv)
