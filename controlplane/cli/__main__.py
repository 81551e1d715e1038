"""``python -m controlplane.cli``: the ``portside`` command."""

import sys

from controlplane.cli import main

sys.exit(main())
