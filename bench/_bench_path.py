"""Imported first by scripts in bench/ whose imports reach app.google: such a script runs
with this folder first on sys.path, where bench/google.py would be found by `import
google` instead of google-auth's namespace package. Bind the namespace without the
folder, then put the folder back, last, for the helpers (as bench/google.py does)."""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
if str(BENCH.parent) not in sys.path:
    sys.path.insert(0, str(BENCH.parent))
import google.oauth2.credentials  # noqa: E402, F401

sys.path.append(str(BENCH))
