"""``/v1/tokens``: API tokens (admin only)."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_smorest import Blueprint, Page

from controlplane import schemas
from controlplane.api.auth import actor, forget_host_token, require
from controlplane.api.requestdb import session
from controlplane.api.shaping import AUTH_ERRORS, row_fields
from controlplane.services import tokens

blueprint = Blueprint("tokens", __name__, url_prefix="/v1/tokens", description="API tokens")


@blueprint.post("")
@require("admin")
@blueprint.arguments(schemas.TokenCreateSchema)
@blueprint.response(201, schemas.NewTokenSchema)
@blueprint.alt_response(401, schema=schemas.ApiErrorSchema, description=AUTH_ERRORS[401])
def create_token(data: dict[str, Any]) -> dict[str, Any]:
    db = session()
    token, secret = tokens.create_token(
        db, data["name"], data["scope"], actor=actor(), builds=data["builds"]
    )
    db.commit()
    return row_fields(token, schemas.TokenSchema, token=secret)


@blueprint.get("")
@require("admin")
@blueprint.response(200, schemas.TokenSchema(many=True))
@blueprint.paginate(Page)
def list_tokens() -> list[Any]:
    return tokens.list_tokens(session())


@blueprint.delete("/<int:token_id>")
@require("admin")
@blueprint.response(204)
def revoke_token(token_id: int) -> None:
    db = session()
    token = tokens.revoke_token(db, token_id, actor())
    db.commit()
    forget_host_token(current_app.extensions["portside.redis"], token.public_id)
