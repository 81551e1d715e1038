"""Reserved for job F of this session (keeps the chain linear while several migrations
are written at once). Job F: if you need a migration, put it HERE — rename this file to
0014_<your_name>.py, keep revision "0014" and down_revision "0013", replace the body.
If nobody needs it, the lead removes it and re-chains before the session ends."""

from __future__ import annotations

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
