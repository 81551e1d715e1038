"""Business logic: plain functions over a SQLAlchemy session, used by views, tasks and CLI."""
