"""Observability: the worker's metrics, health verdicts, its HTTP server and logging set-up.

May import the foundation modules only.
"""
