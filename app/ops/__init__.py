"""Running the system and looking at it: the ``jobq`` command, the worker set-up ``jobq run``
starts, and the embedded PostgreSQL and Redis of a fresh machine."""
