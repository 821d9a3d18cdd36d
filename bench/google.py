"""Gmail quota units and HTTP requests: our incremental sync against a naive sync.

    .venv/bin/python bench/google.py                 # about 30 seconds
    .venv/bin/python bench/google.py --mails 500 --polls 96

Both sides talk through the real google-api-python-client to the fake Google of
`tests/fakes/google.py` on 127.0.0.1, which charges Gmail's documented quota units and
records every request; the figures are the fake's counts. Ours is `GoogleSource`:
`mail_changes` (one `history.list`) as the watch poller's change detector, `delta` from
the cursor for the digest (`history.list`, then metadata in batches of at most 50). The
naive sync keeps no cursor: every time, `messages.list` (all pages) then
`messages.get` (format=metadata) for each message listed, one request each. The day's
mail comes from `bench/_mailgen.py`. See bench/README.md.
"""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# This script is named google.py: with its folder first on sys.path (as Python puts it),
# `import google` would find this file instead of the google-auth namespace package.
# Bind the namespace without the folder, then put the folder back, last, for the helpers.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
if str(ROOT) not in sys.path:  # the fake lives in tests/, at the repository root
    sys.path.insert(0, str(ROOT))
import google.auth  # noqa: E402, F401
import google.oauth2.credentials  # noqa: E402, F401

sys.path.append(str(BENCH))
from _gmail_quota import main  # noqa: E402

if __name__ == "__main__":
    main()
