"""Benchmarks of Portside's hot paths; ``python -m bench`` (``make bench``) runs them."""
