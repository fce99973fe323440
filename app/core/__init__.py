"""The ground every other layer stands on, with no I/O of its own: settings, errors, redaction,
log lines, the intent manifest, retry decisions, request validation, cron slots, result bounds."""
