"""Refused environments: what the control plane will not serve, shown with the reason."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from controlplane.models import Environment
from controlplane.services import audit
from controlplane.statuses import EnvironmentStatus

# How a refusal made while rendering a snapshot starts its status_reason: such an
# environment goes back to deploying once it renders again.
WITHHELD_REASON = "not served by the control plane: "


def refuse(session: Session, environment: Environment, reason: str, **detail: Any) -> None:
    """Show that ``environment`` is refused and why (audited once per reason)."""
    if environment.status == EnvironmentStatus.REFUSED and environment.status_reason == reason:
        return
    environment.status = EnvironmentStatus.REFUSED
    environment.status_reason = reason
    audit.record(
        session,
        "control plane",
        "environment.refused",
        "environment",
        environment.id,
        reason=reason,
        **detail,
    )


def withhold(session: Session, environment: Environment, exc: Exception) -> str:
    """Refuse an environment its snapshot could not render; the reason, for the agent."""
    reason = WITHHELD_REASON + _reason(exc)
    refuse(session, environment, reason)
    return reason


def unwithhold(environment: Environment) -> None:
    """An environment withheld before renders again: its agent converges it now."""
    if environment.status == EnvironmentStatus.REFUSED and (
        environment.status_reason or ""
    ).startswith(WITHHELD_REASON):
        environment.status = EnvironmentStatus.DEPLOYING
        environment.status_reason = None


def _reason(exc: Exception) -> str:
    """Why an environment could not be rendered, for a person (never a secret: the
    exceptions met here carry key paths and class names, not values)."""
    text = str(exc).strip()
    return (f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__)[:2000]
