"""``python -m npattn COMMAND [options]``: the command line.

Each command lives in its own module, which owns its options and is imported only when run:

* ``check`` -- the gradient checker over every registered op and block (:mod:`npattn.check_all`);
* ``demo``  -- train a small CNN with and without CBAM (:mod:`npattn.demo`);
* ``bench`` -- the benchmark suite beside PyTorch (:mod:`npattn.bench`).

Every command module has ``main(argv) -> int``; exit code 2 means bad usage.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "check": ("npattn.check_all", "check every op and block against finite differences"),
    "demo": ("npattn.demo", "train a small CNN with and without CBAM on synthetic data"),
    "bench": ("npattn.bench", "time ops and blocks, side by side with PyTorch if installed"),
}


def _usage() -> str:
    lines = ["usage: python -m npattn COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<7} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`python -m npattn COMMAND --help` lists a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"npattn: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)
