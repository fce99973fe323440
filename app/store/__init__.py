"""Every SQL statement the engine runs, named, with the engines and sessions that run them:
``jobstore`` (the one writer of job_executions and job_events), ``reads`` (listings, history,
statistics), ``tenants``, ``schedules``; ``db`` (connections, the handler role's binding) and
``models`` (the tables, which the migrations follow)."""
