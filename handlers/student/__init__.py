"""``student.*``: the roster import from CSV (batched, resumable, bad rows reported by line),
moving a student to another class, graduating the final year, and merging duplicate records."""
