"""Shared service foundation: settings, database engine, ORM tables, workload catalog.

Depends on nothing else of optforge, so api, workers and search can all import it.
"""
