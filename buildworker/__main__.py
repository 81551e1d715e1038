"""``python -m buildworker``: a build host's worker process (see :mod:`tasks.buildmain`)."""

import sys

from tasks.buildmain import main

sys.exit(main())
