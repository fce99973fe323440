"""``report.*``: weekly attendance, monthly billing, a student's progress and a tenant's data
export, each a file under ``$JOBQ_HOME/reports/<tenant>/<kind>/`` and one ``reports`` row per
kind, period and scope (a rerun replaces both)."""
