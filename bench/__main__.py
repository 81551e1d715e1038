"""``python -m bench``: the webhook-intake benchmark."""

from __future__ import annotations

import sys

from bench.webhooks import main

if __name__ == "__main__":
    sys.exit(main())
