import time
import pytest
from app.broker.celery_app import celery_app
from app.tasks.dispatch import dispatch_intent
from app.intake import pump
from app.broker import dispatch_queue


def test_rate(tenant):
    n = 3000
    with celery_app.producer_or_acquire() as producer:
        rs = [dispatch_intent.apply_async(kwargs={"tenant_id": tenant, "intent_key": "system.exec.sleep",
              "intent_params": {"seconds": 0.01}}, producer=producer) for _ in range(n)]
    held = dispatch_queue.Held()
    ev = pump.Events()
    spent = {"events": 0.0}
    orig = ev.tasks
    def timed(batch):
        c = time.process_time(); orig(batch); spent["events"] += time.process_time() - c
    ev.tasks = timed
    pump.pump_once(held, ev, 10)
    t0, c0 = time.time(), time.process_time()
    done = 10
    while done < n:
        done += pump.pump_once(held, ev)
    took, cpu = time.time() - t0, time.process_time() - c0
    print(f"\npump wrote {n} in {took:.2f}s wall, {cpu:.2f}s CPU of which events {spent['events']:.2f}s CPU"
          f" -> {n/(cpu):.0f}/s of CPU")
