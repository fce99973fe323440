"""``report.*``: the weekly attendance report, the monthly billing report, a student's progress
report and an export of a tenant's data. Each writes its file under
``$JOBQ_HOME/reports/<tenant>/<kind>/`` and one ``reports`` row per kind, period and scope, so
a rerun replaces the file and the row instead of adding another."""
