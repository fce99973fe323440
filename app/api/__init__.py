"""``jobq api``: the academies' own HTTP API (FastAPI on uvicorn), versioned under ``/v1``.

Every request acts for exactly one tenant, named by its API key or JWT (an operator key names it
per request), and reads and writes through that tenant's row-level security only
(:func:`app.store.db.tenant_session`). ``/metrics`` serves the table's numbers to Prometheus.
"""
