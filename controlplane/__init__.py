"""Portside's control plane: the Flask app, its records and its business logic."""

__version__ = "0.1.0"
