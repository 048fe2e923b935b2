"""The benchmark suite runs (a smoke run, no PyTorch): it writes its Markdown and JSON tables."""

import json

from npattn.cli import main


def test_bench_quick_run_writes_its_tables(tmp_path, capsys):
    rc = main(["bench", "--groups", "block", "--only", "SE", "--dtype", "float32", "--quick",
               "--no-torch", "--out", str(tmp_path)])
    assert rc == 0
    (md,) = tmp_path.glob("*.md")
    (js,) = tmp_path.glob("*.json")
    data = json.loads(js.read_text())
    (row,) = data["results"]
    assert row["name"] == "SE" and row["dtype"] == "float32"
    assert row["fb"]["median_ms"] > 0 and row["torch_fb"] is None
    assert "| SE | 8x64x56x56 | float32 |" in md.read_text()
    assert "thp" in data["meta"]
