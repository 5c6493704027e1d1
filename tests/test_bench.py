"""The benchmarks still run against the core they measure: each module under bench/ imports
(a name moved in the core broke two of them unnoticed once). One subprocess imports them
all, as `python bench/NAME.py` would, with bench/ first on the path."""

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_every_benchmark_imports(tmp_path):
    names = sorted(p.stem for p in BENCH.glob("*.py"))
    assert "throughput" in names and "document_mask" in names
    script = ("import importlib, sys\n"
              f"sys.path.insert(0, {str(BENCH)!r})\n"
              f"for name in {names!r}:\n"
              "    importlib.import_module(name)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
