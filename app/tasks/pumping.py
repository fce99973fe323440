"""Beat's process runs the dispatch pump (app.intake.pump): ``dispatch_intent`` requests become
rows in batches there, and the fairness feeder orders them. Every beat starts one; one leads."""

from __future__ import annotations

from celery.signals import beat_init


@beat_init.connect
def _start_pump(**_: object) -> None:
    from app.intake import pump  # beat's alone: a worker's start does not import it

    pump.start()
