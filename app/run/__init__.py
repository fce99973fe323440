"""One delivery of a job's message: the claim, the handler with its context in the tenant's
transaction, the outcome; and what keeps a run honest: its lease, the completions that ride on
the next claim, time limits, stopping a cancelled run, a rate shared across workers."""
