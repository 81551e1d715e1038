"""What the control plane receives (webhook deliveries) and what it sends after a commit
(the outbox)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.models.base import Base, one_of, utcnow
from controlplane.statuses import DeliveryStatus


class WebhookDelivery(Base):
    """A verified GitHub delivery, committed before it is enqueued (the outbox)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_status_received", "status", "received_at"),
        one_of("status", DeliveryStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    guid: Mapped[str] = mapped_column(String(64), unique=True)
    event: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str | None] = mapped_column(String(64))
    hook_id: Mapped[str | None] = mapped_column(String(32))
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    repository_id: Mapped[int | None] = mapped_column(BigInteger)
    repository_full_name: Mapped[str | None] = mapped_column(String(255))
    # The body exactly as GitHub signed it; parsed when processed, not when received.
    body: Mapped[str] = mapped_column("payload", Text)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.RECEIVED)
    outcome: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[dt.datetime | None]
    processed_at: Mapped[dt.datetime | None]

    @property
    def payload(self) -> dict[str, Any]:
        """The parsed body (a JSON object: the receiver refused anything else)."""
        cached: dict[str, Any] | None = self.__dict__.get("_payload")
        if cached is None:
            cached = json.loads(self.body)
            self.__dict__["_payload"] = cached
        return cached


class OutboxMessage(Base):
    """Work to send once the transaction that wrote it commits (controlplane.services.
    effects): the relay (tasks.relay) sends it and deletes the row in one transaction."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    # What to send (an effects.Kind); the relay maps it to a control task.
    kind: Mapped[str] = mapped_column(String(32))
    args: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
