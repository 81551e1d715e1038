"""``/v1/installations``: the GitHub App's installations and the repositories each grants."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint, Page

from controlplane import schemas
from controlplane.api.auth import require
from controlplane.api.requestdb import session
from controlplane.services import installations

blueprint = Blueprint(
    "installations", __name__, url_prefix="/v1/installations", description="App installations"
)


@blueprint.get("")
@require("read")
@blueprint.response(200, schemas.InstallationSchema(many=True))
@blueprint.paginate(Page)
def list_installations() -> list[Any]:
    return installations.list_installations(session())


@blueprint.get("/<int:installation_id>/repositories")
@require("read")
@blueprint.response(200, schemas.RepositorySchema(many=True))
@blueprint.paginate(Page)
def list_repositories(installation_id: int) -> list[Any]:
    return installations.list_repositories(session(), installation_id)
