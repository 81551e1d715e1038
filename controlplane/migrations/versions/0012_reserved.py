"""Reserved for job C of this session (keeps the chain linear while several migrations
are written at once). Job C: if you need a migration, put it HERE — rename this file to
0012_<your_name>.py, keep revision "0012" and down_revision "0011", replace the body.
If nobody needs it, the lead removes it and re-chains before the session ends."""

from __future__ import annotations

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
