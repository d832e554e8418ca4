"""`make bench` / `python -m bench [NAME ...]`: run benchmarks and write bench/results/<name>.json.

Each benchmark is a module bench/<name>.py (or a package bench/<name>/) with `run(quick: bool) -> dict`. Results are ratios against a baseline
measured side by side in the same run, never absolute thresholds asserted in tests.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCHES = ["provision", "ingest", "quality", "first_answer", "chat", "widget", "analytics", "load", "credits", "tenants",
           "coldstart", "curated", "crawl", "webhooks", "scaleout", "retrieval"]
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {BENCHES} that exist)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--corpus", action="append", metavar="NAME",
                        help="quality only: run this corpus (repeatable; default: every corpus)")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    here = Path(__file__).parent
    names = args.names or [n for n in BENCHES if (here / f"{n}.py").exists() or (here / n / "__init__.py").exists()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        started = time.perf_counter()
        print(f"== bench {name}", flush=True)
        try:
            options = {"corpora": args.corpus} if args.corpus and name == "quality" else {}
            result = module.run(quick=args.quick, **options)
        except Exception as exc:  # one failing bench must not hide the others' results
            failed += 1
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result["_meta"] = {
            "bench": name, "at": datetime.now(UTC).isoformat(), "seconds": round(time.perf_counter() - started, 1),
            "quick": args.quick, "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        }
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(json.dumps(result, indent=2, default=str), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
