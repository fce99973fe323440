"""``attendance.*``: late and absence notices to guardians, closing a session's attendance,
and the daily attendance summary."""
