"""Crafted input read in a child process: a regex that backtracks without end on it holds
the GIL, and would take the test run down with it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# A liveness bound, not a measurement: the fixed patterns read these inputs in well under
# a second, the old ones in hours.
SECONDS = 120


def read_in_child(code: str, inputs: Any) -> Any:
    """Run `code`, Python that reads `inputs` as JSON on stdin and prints its answer as
    JSON, in a child process of this repository; the answer, parsed."""
    done = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(inputs), capture_output=True,
        text=True, timeout=SECONDS, check=True, cwd=ROOT,
    )
    return json.loads(done.stdout)
