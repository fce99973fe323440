"""How long ``jobq run`` waits before starting again a process that stopped on its own."""

from __future__ import annotations

from app.ops.supervisor import MAX_BACKOFF_SECONDS, START_MARK, backoff, keep_previous, tail


def test_a_process_that_keeps_dying_waits_longer_each_time_up_to_the_cap():
    waits = [backoff(n) for n in range(8)]
    assert waits[:5] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert waits[5:] == [MAX_BACKOFF_SECONDS] * 3 == [30.0] * 3


def test_the_end_of_a_dead_process_log_is_its_last_run_s_own_lines(tmp_path):
    log = tmp_path / "realtime.log"
    log.write_text(f"{START_MARK} realtime at 10:00 ---\nfirst run\n\n"
                   f"{START_MARK} realtime at 10:05 ---\n"
                   + "".join(f"line {i}\n" for i in range(20)))
    assert tail(log, 3) == ["line 17", "line 18", "line 19"]
    assert "first run" not in tail(log, 100)
    assert tail(tmp_path / "missing.log") == []


def test_a_new_run_keeps_the_previous_run_s_log_beside_its_own(tmp_path):
    log = tmp_path / "beat.log"
    log.write_text("the last run\n")
    keep_previous(log)
    assert not log.exists()
    assert (tmp_path / "beat.log.1").read_text() == "the last run\n"
    keep_previous(log)  # nothing to keep: no error
