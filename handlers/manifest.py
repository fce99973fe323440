"""Every intent: key -> handler, parameter model and options.

Handlers and models are named as ``"module:attribute"`` strings and imported only when a
process first runs (or validates) that intent. Keep the list sorted by family.
"""

from __future__ import annotations

from app.handler_api import Intent, RetryPolicy, Schedule

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
    # --- communication ----------------------------------------------------------------------------
    Intent(
        "communication.exec.broadcast",
        "handlers.communication.broadcast:broadcast",
        params="handlers.communication.params:BroadcastParams",
        description="단체 안내: one message to every guardian of the academy or a class, fanned "
                    "out into parallel chunk jobs; progress on this job.",
        queue="bulk",
        max_retries=10,
        retry=RetryPolicy(maximum=300.0),
        time_limit=3600,
    ),
    Intent(
        "communication.exec.broadcast_chunk",
        "handlers.communication.broadcast:broadcast_chunk",
        params="handlers.communication.params:BroadcastChunkParams",
        description="Send one chunk of a broadcast (fanned out by communication.exec.broadcast).",
        queue="bulk",
        max_retries=10,
        retry=RetryPolicy(maximum=300.0),
        time_limit=1800,
    ),
    Intent(
        "communication.exec.send_message",
        "handlers.communication.messages:send_message",
        params="handlers.communication.params:SendMessageParams",
        description="One message to a guardian, or to a student's guardians.",
        max_retries=5,
    ),
    Intent(
        "communication.exec.retry_failed_deliveries",
        "handlers.communication.redelivery:retry_failed_deliveries",
        params="handlers.communication.params:RetryFailedDeliveriesParams",
        description="Send failed or abandoned messages again, in place, to today's address.",
        queue="bulk",
        max_retries=5,
        retry=RetryPolicy(maximum=600.0),
        time_limit=1800,
    ),
    Intent(
        "communication.exec.daily_digest",
        "handlers.communication.messages:daily_digest",
        params="handlers.communication.params:DailyDigestParams",
        description="Each guardian's account of their child's day: attendance, fees due soon.",
        queue="bulk",
        time_limit=1800,
    ),
    # --- report -------------------------------------------------------------------------------------
    Intent(
        "report.exec.weekly_attendance",
        "handlers.report.attendance:weekly_attendance",
        params="handlers.report.params:WeeklyAttendanceParams",
        description="Weekly attendance CSV per class and student, and a summary per class "
                    "(default: the week before the job's day).",
        queue="bulk",
        time_limit=1800,
    ),
    Intent(
        "report.exec.monthly_billing",
        "handlers.report.billing:monthly_billing",
        params="handlers.report.params:MonthlyBillingParams",
        description="A month's invoices and payments as CSV, with totals per class "
                    "(default: the month before the job's).",
        queue="bulk",
        time_limit=1800,
    ),
    Intent(
        "report.exec.student_progress",
        "handlers.report.attendance:student_progress",
        params="handlers.report.params:StudentProgressParams",
        description="A student's sessions and attendance over a period, rates per class and "
                    "month, and what is left to pay.",
        queue="bulk",
    ),
    Intent(
        "report.exec.export_tenant_data",
        "handlers.report.export:export_tenant_data",
        params="handlers.report.params:ExportTenantDataParams",
        description="Every table of the academy as CSV in one ZIP, with a Korean README.",
        queue="bulk",
        time_limit=3600,
    ),
    # --- student ------------------------------------------------------------------------------------
    Intent(
        "student.exec.import_roster",
        "handlers.student.roster:import_roster",
        params="handlers.student.params:ImportRosterParams",
        description="Import a roster CSV (JOBQ_HOME/uploads or inline) in resumable batches; "
                    "bad rows reported by line.",
        queue="bulk",
        max_retries=5,
        time_limit=3600,
    ),
    Intent(
        "student.exec.transfer_class",
        "handlers.student.enrolment:transfer_class",
        params="handlers.student.params:TransferClassParams",
        description="Move a student to another class from a day on; tell the guardians.",
    ),
    Intent(
        "student.exec.deactivate_graduates",
        "handlers.student.enrolment:deactivate_graduates",
        params="handlers.student.params:DeactivateGraduatesParams",
        description="Mark the graduating year graduated; end their enrolments and later bills.",
        queue="bulk",
    ),
    Intent(
        "student.exec.merge_duplicates",
        "handlers.student.merge:merge_duplicates",
        params="handlers.student.params:MergeDuplicatesParams",
        description="Merge duplicate student records (given, or found by name and birth date "
                    "or guardian) into one.",
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

#: The periodic work every installation has: ``jobq run`` creates whichever is missing (by name);
#: from then on they live in ``job_schedules``, where ``jobq schedules`` changes them.
SCHEDULES: tuple[Schedule, ...] = (
    Schedule(
        "monthly-settlement", "billing.exec.monthly_settlement", "0 2 1 * *",
        "Monthly settlement of every active academy: the 1st of the month, 02:00",
    ),
    Schedule(
        "weekly-attendance-report", "report.exec.weekly_attendance", "0 7 * * 1",
        "Weekly attendance report of every active academy: Mondays, 07:00",
    ),
)

#: Business commands ``jobq`` adds (their ``register(app, operations)``) and whose ``on_run``
#: hook ``jobq run`` calls after migrating: the demo academy.
COMMANDS: tuple[str, ...] = ("handlers.demo_cli",)

#: The business's own settings (SMTP, gateways, send rates): the engine reads them with the
#: manifest, so a malformed one stops a worker as it starts.
SETTINGS = "handlers.settings:business"
