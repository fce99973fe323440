"""Every intent: key -> handler, parameter model and options.

Handlers and models are named as ``"module:attribute"`` strings and imported only when a
process first runs (or validates) that intent. Keep the list sorted by family.
"""

from __future__ import annotations

from app.manifest import Intent, RetryPolicy

INTENTS: tuple[Intent, ...] = (
    # --- attendance -------------------------------------------------------------------------------
    Intent(
        "attendance.exec.notify_guardians_late",
        "handlers.attendance.notices:notify_guardians_late",
        params="handlers.attendance.params:NotifyGuardiansLateParams",
        description="지각 학생 보호자에게 알림 전송: record the student late and tell the guardians.",
    ),
    Intent(
        "attendance.exec.notify_absentees",
        "handlers.attendance.notices:notify_absentees",
        params="handlers.attendance.params:SessionParams",
        description="Tell the guardians of every student marked absent from a class session.",
    ),
    Intent(
        "attendance.exec.mark_unchecked_absent",
        "handlers.attendance.sessions:mark_unchecked_absent",
        params="handlers.attendance.params:MarkUncheckedAbsentParams",
        description="At the end of a session, mark enrolled students with no record absent.",
    ),
    Intent(
        "attendance.exec.daily_summary",
        "handlers.attendance.sessions:daily_summary",
        params="handlers.attendance.params:DailySummaryParams",
        description="Count a day's attendance per class into a daily_attendance report.",
        queue="bulk",
    ),
    # --- billing ----------------------------------------------------------------------------------
    Intent(
        "billing.exec.monthly_settlement",
        "handlers.billing.settlement:monthly_settlement",
        params="handlers.billing.params:MonthlySettlementParams",
        description="Bill a month (default: the job's month): one invoice per active enrolment.",
        queue="bulk",
    ),
    Intent(
        "billing.exec.payment_reminders",
        "handlers.billing.settlement:payment_reminders",
        params="handlers.billing.params:PaymentRemindersParams",
        description="Remind guardians of overdue invoices, each at most every few days.",
        queue="bulk",
    ),
    Intent(
        "billing.exec.sync_payment_status",
        "handlers.billing.gateway:sync_payment_status",
        params="handlers.billing.params:SyncPaymentStatusParams",
        description="Record payments from the outside payment gateway; mark invoices paid.",
        queue="bulk",
        max_retries=5,
        retry=RetryPolicy(maximum=600.0),
    ),
    Intent(
        "billing.exec.apply_late_fees",
        "handlers.billing.settlement:apply_late_fees",
        params="handlers.billing.params:ApplyLateFeesParams",
        description="Add a late fee once to invoices still open after the grace days.",
        queue="bulk",
    ),
    # --- class ------------------------------------------------------------------------------------
    Intent(
        "class.exec.notify_schedule_change",
        "handlers.classes.schedule:notify_schedule_change",
        params="handlers.classes.params:NotifyScheduleChangeParams",
        description="Move a session (optional) and tell every enrolled student's guardians.",
    ),
    Intent(
        "class.exec.generate_term_sessions",
        "handlers.classes.schedule:generate_term_sessions",
        params="handlers.classes.params:GenerateTermSessionsParams",
        description="Create a term's class sessions from each class's weekly timetable.",
        queue="bulk",
    ),
    Intent(
        "class.exec.close_term",
        "handlers.classes.lifecycle:close_term",
        params="handlers.classes.params:CloseTermParams",
        description="Close a term: end its enrolments, cancel its sessions still ahead.",
        queue="bulk",
    ),
    Intent(
        "class.exec.archive_class",
        "handlers.classes.lifecycle:archive_class",
        params="handlers.classes.params:ArchiveClassParams",
        description="Archive a class: end its enrolments, cancel its sessions still ahead.",
        queue="bulk",
    ),
    # --- system: diagnostics ------------------------------------------------------------------
    Intent(
        "system.exec.echo",
        "handlers.system.diagnostics:echo",
        params="handlers.system.params:EchoParams",
        description="Return the parameters as the result.",
    ),
    Intent(
        "system.exec.sleep",
        "handlers.system.diagnostics:sleep",
        params="handlers.system.params:SleepParams",
        description="Sleep for `seconds`, reporting progress.",
        time_limit=3600,
    ),
    Intent(
        "system.exec.loaded_handlers",
        "handlers.system.introspect:loaded_handlers",
        description="List the handler modules this worker process has imported.",
    ),
    Intent(
        "system.exec.flaky",
        "handlers.system.diagnostics:flaky",
        params="handlers.system.params:FlakyParams",
        description="Fail with a transient error `failures` times, then succeed.",
        max_retries=5,
        retry=RetryPolicy(base=0.2, maximum=2.0),
    ),
)
