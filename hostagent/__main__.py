"""``python -m hostagent``: run the agent (``portside agent`` execs this)."""

import os
import sys

from hostagent.agent import main

sys.exit(main(os.environ))
