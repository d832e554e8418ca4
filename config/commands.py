"""Base for operator commands: `--json` prints machine-readable JSON (and nothing else) on stdout; errors use the
one error shape and exit with status 1.

"Nothing else" holds whatever the command causes: while it runs with `--json`, standard output is handed to
standard error — the Python object (print, the console mail backend, libraries, Django's own notices) and, when it is
the process's real stdout, file descriptor 1 itself (C extensions, forked workers, child processes). Only the JSON
written through `emit`/`emit_line`/`fail` reaches the real stdout.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from config.errors import ApplicationError, ErrorCode


def _process_stdout_fd(stream: Any) -> int | None:
    """The descriptor to take over when `stream` is this process's standard output (not a test's StringIO)."""
    try:
        fd = stream.fileno()
        return fd if sys.__stdout__ is not None and fd == sys.__stdout__.fileno() else None
    except (AttributeError, OSError, ValueError):
        return None


@contextlib.contextmanager
def stdout_reserved_for_json(stdout: OutputWrapper) -> Iterator[OutputWrapper]:
    """Send everything written to stdout during the block to stderr; yield the one writer that reaches the real
    stdout (`stdout`, or a copy of its descriptor when the descriptor itself was redirected)."""
    for stream in (sys.stdout, sys.__stdout__):
        if stream is not None:
            stream.flush()
    fd = _process_stdout_fd(stdout._out)
    if fd is None:
        with contextlib.redirect_stdout(sys.stderr):
            yield stdout
        return
    encoding = getattr(stdout._out, "encoding", None) or "utf-8"
    saved = os.dup(fd)
    json_stream = open(saved, "w", encoding=encoding, closefd=True)
    os.dup2(sys.__stderr__.fileno() if sys.__stderr__ is not None else 2, fd)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield OutputWrapper(json_stream)
    finally:
        json_stream.flush()
        for stream in (sys.stdout, sys.__stdout__):  # what was buffered meanwhile belongs to stderr
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
        os.dup2(saved, fd)
        json_stream.close()


class JsonStdoutMixin:
    """For a command with a `--json` option (dest `as_json`): while it runs with it, `self.stdout` and the process's
    stdout go to stderr; the JSON is written to `self.json_stdout`. Put it before the command's base class."""

    as_json = False

    def execute(self, *args: Any, **options: Any) -> str | None:
        self.as_json = bool(options.get("as_json"))
        # BaseCommand.execute would wrap these again; take them here so the swap below is not undone.
        if options.get("stdout"):
            self.stdout = OutputWrapper(options["stdout"])
        if options.get("stderr"):
            self.stderr = OutputWrapper(options["stderr"])
        options = {**options, "stdout": None, "stderr": None}
        real_stdout = self.json_stdout = self.stdout
        if not self.as_json:
            return super().execute(*args, **options)
        with stdout_reserved_for_json(real_stdout) as json_stdout:
            self.json_stdout, self.stdout = json_stdout, self.stderr
            try:
                return super().execute(*args, **options)
            finally:
                self.json_stdout = self.stdout = real_stdout


class OperatorCommand(JsonStdoutMixin, BaseCommand):
    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print machine-readable JSON only.")
        self.add_command_arguments(parser)

    def add_command_arguments(self, parser: CommandParser) -> None:
        pass

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except ApplicationError as error:
            self.fail(error)
        except CommandError as error:
            self.fail(ApplicationError(str(error), code=ErrorCode.INVALID))
        except Exception as error:
            if not self.as_json:
                raise
            # Even a bug answers in the error shape on stdout; the traceback is for the operator, on stderr.
            traceback.print_exc(file=sys.stderr)
            self.fail(ApplicationError("The command failed unexpectedly; the traceback is on stderr.",
                                       code=ErrorCode.SERVER_ERROR, details={"exception": type(error).__name__}))
        return None

    def fail(self, error: ApplicationError) -> None:
        # Called after execute() has handed stdout back: self.stdout is the real one again.
        if self.as_json:
            self.stdout.write(json.dumps(error.as_dict()))
        else:
            self.stderr.write(f"error ({error.code}): {error.message}")
        sys.exit(1)

    def emit(self, data: Any, human: str) -> None:
        if self.as_json:
            self.json_stdout.write(json.dumps(data, default=str))
        else:
            self.stdout.write(human)

    def emit_line(self, data: Any) -> None:
        """One JSON Lines record (for streaming outputs): flushed at once, so a reader gets it as it comes."""
        out = self.json_stdout if self.as_json else self.stdout
        out.write(json.dumps(data, default=str))
        out.flush()
