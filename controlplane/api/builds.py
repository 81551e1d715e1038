"""``/v1/builds``: builds, newest first, and one build with its steps."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from controlplane import schemas
from controlplane.api.auth import require
from controlplane.api.requestdb import session
from controlplane.api.shaping import paged
from controlplane.models import Build
from controlplane.services import listings

blueprint = Blueprint("builds", __name__, url_prefix="/v1/builds", description="Builds")


@blueprint.get("")
@require("read")
@blueprint.arguments(schemas.BuildQuerySchema, location="query")
@blueprint.response(200, schemas.BuildSchema(many=True))
@blueprint.paginate()
def list_builds(query: dict[str, Any], pagination_parameters: Any) -> list[Any]:
    statement = listings.builds(
        service_id=query.get("service"),
        environment_id=query.get("environment"),
        status=query.get("status"),
    )
    return paged(statement, pagination_parameters)


@blueprint.get("/<int:build_id>")
@require("read")
@blueprint.response(200, schemas.BuildDetailSchema)
def get_build(build_id: int) -> Build:
    return listings.get_build(session(), build_id)
