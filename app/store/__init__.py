"""Every SQL statement the engine runs, named, with the engines and sessions that run them:
``jobstore`` (the one writer of job_executions and job_events, a module per stage of a job's
life), ``reads`` (listings, history, statistics), ``tenants``, ``schedules``, ``apikeys``,
``streams``, ``metrics``; ``db`` (connections, the handler role's binding), ``liveness`` (locks
that say a process lives), ``models`` (the tables, which the migrations follow) and
``schema.sql`` (the database's functions and triggers as the migrations leave them)."""
