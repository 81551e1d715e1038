"""The build worker's library: git, compose detection, docker build/push, HTTP client.

Plain Python on purpose: no Flask, SQLAlchemy or Celery, and no database access.
"""
