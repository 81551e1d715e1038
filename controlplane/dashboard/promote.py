"""The Promote form of the service page: an admin deploys what one environment runs to
another of the service without building again (:func:`promotion.promote`, the function
behind ``POST /v1/environments/{id}/promote``)."""

from __future__ import annotations

from flask import abort, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from controlplane.api.requestdb import session
from controlplane.dashboard.forms import admin_form, committed
from controlplane.dashboard.views import blueprint
from controlplane.services import promotion


@blueprint.post("/environments/<int:environment_id>/promote")
def promote_environment(environment_id: int) -> BaseResponse:
    """An admin's session and the form's CSRF token, as the Approve and Deploy forms."""
    actor = admin_form("promoting")
    target = request.form.get("to", "")
    if not target.isdigit():
        abort(400, "the form is out of date; reload the page")
    db = session()
    with committed(db):
        environment, _deployment = promotion.promote(db, environment_id, int(target), actor)
    return redirect(url_for("dashboard.service_page", service_id=environment.service_id))
