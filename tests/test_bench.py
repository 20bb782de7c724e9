"""The benchmark command, in its one-short-run form, so it cannot rot. Its numbers are
reported, never asserted."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # runs the quick benchmark on the real model (minutes)


def test_the_quick_benchmark_writes_json_markdown_and_a_plot(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for part in ("streaming", "backends", "concurrency", "switching", "threads",
                 "conversations", "machine"):
        assert part in results, f"the report has no {part} part"
    for path in ("raw", "api", "page", "page_client"):
        assert results["streaming"][path]["runs"] == 1
    assert [level["clients"] for level in results["concurrency"]["levels"]] == [1, 2, 4]
    markdown = (tmp_path / "results.md").read_text()
    assert "| app: HTTP API (SSE) |" in markdown and "Long conversations" in markdown
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
