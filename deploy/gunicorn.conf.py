"""Gunicorn settings for ``portside web``; each can be overridden by GUNICORN_* variables."""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2))
# Agents long-poll (each holds a thread, not a database connection, while it waits).
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
worker_class = "gthread"
# Long polls of the agents hold a request open for up to a minute.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "90"))
graceful_timeout = 30
keepalive = 5
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
# GitHub's 25 MB deliveries are refused by the app, not by a header limit.
limit_request_field_size = 16384
