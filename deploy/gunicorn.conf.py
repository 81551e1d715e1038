"""Gunicorn settings for ``portside web``; each can be overridden by GUNICORN_* variables."""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# One worker per core: the workers are threaded, so more of them only take turns on the
# same cores (measured: more CPU per webhook delivery, a longer p99; docs/operations.rst).
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count()))
# Agents long-poll: each waiting poll holds a thread (no database or Redis connection),
# so workers x threads is how many agents one web server holds at once. Threads are
# started as requests need them; idle ones cost little. 1024 per worker: as many held
# polls per core as the two workers of 512 per core that this replaced.
threads = int(os.environ.get("GUNICORN_THREADS", "1024"))
# Above threads, so kept-alive connections stay possible (gunicorn keeps at most
# worker_connections - threads of them idle); a worker at its limit stops accepting and
# another takes the connection.
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", str(2 * threads)))
worker_class = "gthread"
# Long polls of the agents hold a request open for up to a minute.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "90"))
graceful_timeout = 30
keepalive = 5
# No access log by default: formatting and writing a line costs every request CPU that
# the webhook intake needs under a storm. The proxy in front usually logs requests;
# GUNICORN_ACCESSLOG=- logs them here to stdout (or to the file it names).
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
# GitHub's 25 MB deliveries are refused by the app, not by a header limit.
limit_request_field_size = 16384

# Prometheus metrics from every worker (prometheus-client's multiprocess mode): a fresh
# directory per run, set before any worker imports prometheus_client, and the files of
# dead workers marked so their live gauges go.
_made_metrics_dirs: list[str] = []


def on_starting(server):  # type: ignore[no-untyped-def]
    import glob
    import tempfile

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        path = tempfile.mkdtemp(prefix="portside-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        _made_metrics_dirs.append(path)


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # type: ignore[no-untyped-def]
    import shutil

    for path in _made_metrics_dirs:
        shutil.rmtree(path, ignore_errors=True)
