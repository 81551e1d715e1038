"""Celery: the app, its queues and routes, thin task wrappers and the chain builder."""
