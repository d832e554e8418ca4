"""`python -m bench.quality prepare [NAME ...]`: index the corpora (ours and the baseline's store) without asking
anything, so a later `python -m bench quality` only answers. Ingestion is the expensive part; it is kept."""
from __future__ import annotations

import argparse
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality")
    parser.add_argument("command", choices=["prepare", "signals"])
    parser.add_argument("names", nargs="*", help="corpora (default: all)")
    parser.add_argument("--no-baseline", action="store_true", help="our index only")
    parser.add_argument("--baseline-only", action="store_true", help="the baseline's store only")
    parser.add_argument("--reverse", action="store_true",
                        help="last file first: a second process indexing the same corpus from the other end")
    args = parser.parse_args()
    if args.command == "signals":  # the coverage signals of every non-sealed question (bench/quality/signals.py)
        from bench.quality.signals import main as signals_main

        return signals_main(args.names)
    from bench.quality.corpora import CORPORA, corpus_files, corpus_index, django_setup

    print(f"database {django_setup()}", flush=True)
    for name in args.names or list(CORPORA):
        corpus = CORPORA[name]
        pages = corpus_files(corpus)
        if not args.baseline_only:
            started = time.perf_counter()
            sizes = corpus_index(corpus, pages, log=lambda line: print(line, flush=True), reverse=args.reverse)
            sizes.pop("page_of")
            print(f"{name}: ours {sizes} in {time.perf_counter() - started:.0f} s", flush=True)
        if not args.no_baseline:
            from django.db import connection

            from bench.quality.baseline import baseline_index

            connection.set_schema_to_public()
            started = time.perf_counter()
            _store, chunks = baseline_index(corpus, pages)
            print(f"{name}: baseline {chunks} chunks in {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
