"""``communication.*``: broadcasts to every guardian of the academy or a class (fanned out into
chunk jobs, paced by a per-channel rate shared by all workers), single messages, a retry of
failed deliveries, and the daily digest."""
