"""The docs say what the code does: tables generated from the code match it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_presets_table_in_the_docs_is_config_py_s():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "presets.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
