"""What every /v1 resource module shares: a row's response fields, one page of a listing,
and the documented authentication failures."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields
from sqlalchemy import Select

from controlplane.api.requestdb import session
from controlplane.services import listings

AUTH_ERRORS = {401: "no valid token", 403: "token of the wrong scope"}


def row_fields(row: Any, schema: type[Schema], **extra: Any) -> dict[str, Any]:
    """A row's attributes named by ``schema`` (computed ones computed from the row), plus
    ``extra``, for a response schema to dump."""
    return {
        name: field.serialize(name, row) if isinstance(field, fields.Method) else getattr(row, name)
        for name, field in schema().fields.items()
    } | extra


def paged(statement: Select[Any], pagination: Any) -> list[Any]:
    """The page flask-smorest's ``pagination`` parameters ask for; sets its item count."""
    page = listings.read_page(session(), statement, pagination.page, pagination.page_size)
    pagination.item_count = page.total
    return page.items
