"""``python -m hostagent`` and ``portside-agent``: run the agent (``portside agent`` execs
this)."""

import os
import sys

from hostagent.agent import main


def run() -> int:
    """The ``portside-agent`` console script: the agent, configured from the environment."""
    return main(os.environ)


if __name__ == "__main__":
    sys.exit(run())
