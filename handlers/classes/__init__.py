"""``class.*``: schedule-change notices, a term's sessions from the timetable, closing a term,
archiving a class. (The package is ``classes``: ``class`` is a Python keyword.)"""
