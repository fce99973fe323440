"""``python -m bench <name> [options]``: run one benchmark (its --help tells more)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "drain": "bench.drain",
    "academies": "bench.academies",
    "publish": "bench.publish",
    "latency": "bench.latency",
    "coldstart": "bench.coldstart",
    "roster": "bench.roster",
    "broadcast": "bench.broadcast",
    "soak": "bench.soak",
    "sweep_latency": "bench.sweep_latency",
    "fairness": "bench.fairness",
    "api": "bench.api",
    "streams": "bench.streams",
    "scale": "bench.scale",
    "report": "bench.report",
    "pressure": "bench.pressure",
    "console": "bench.console",
    "held_pick": "bench.held_pick",
    "tracing": "bench.tracing",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        print("usage: python -m bench {" + ",".join(BENCHMARKS) + "} [options]", file=sys.stderr)
        raise SystemExit(2)
    name = sys.argv.pop(1)
    importlib.import_module(BENCHMARKS[name]).main(sys.argv[1:])


if __name__ == "__main__":
    main()
