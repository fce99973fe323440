"""Work coming in: ``submit`` / ``submit_many`` write a validated request's row in the caller's
transaction and publish it after commit; ``actions`` are what operators do to existing jobs
(cancel, retry on corrected parameters, forget a revoke)."""
