"""``billing.*``: monthly settlement, reminders for overdue invoices, late fees, and the sync
of payments from the outside payment gateway."""
