"""Beat's caretaking, each as plain functions the tasks call: the sweep (the broker in step with
the table), lost-run recovery, the schedules' due slots, retention, and the notes that show
them in ``jobq stats``."""
