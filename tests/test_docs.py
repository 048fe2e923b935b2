"""The docs stay true to the code: generated tables current, every linked page present."""

import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_index_tables_match_the_registries():
    result = subprocess.run([sys.executable, str(DOCS / "build_index.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_relative_link_in_the_docs_resolves():
    missing = []
    for page in DOCS.rglob("*.md"):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                missing.append(f"{page.relative_to(DOCS)} -> {target}")
    assert not missing, "broken links:\n" + "\n".join(missing)


def test_every_page_is_reachable_from_the_index():
    linked = set()
    for page in DOCS.rglob("*.md"):
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            linked.add((page.parent / target).resolve())
    orphans = [str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")
               if p.name != "index.md" and p.resolve() not in linked]
    assert not orphans, f"pages no other page links to: {orphans}"
