"""Base for operator commands: `--json` prints machine-readable JSON (and nothing else) on stdout; errors use the
one error shape and exit with status 1."""
from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.errors import ApplicationError, ErrorCode


class OperatorCommand(BaseCommand):
    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print machine-readable JSON only.")
        self.add_command_arguments(parser)

    def add_command_arguments(self, parser: CommandParser) -> None:
        pass

    def execute(self, *args: Any, **options: Any) -> str | None:
        self.as_json = options.get("as_json", False)
        try:
            return super().execute(*args, **options)
        except ApplicationError as error:
            self.fail(error)
        except CommandError as error:
            self.fail(ApplicationError(str(error), code=ErrorCode.INVALID))
        return None

    def fail(self, error: ApplicationError) -> None:
        if self.as_json:
            self.stdout.write(json.dumps(error.as_dict()))
        else:
            self.stderr.write(f"error ({error.code}): {error.message}")
        sys.exit(1)

    def emit(self, data: Any, human: str) -> None:
        self.stdout.write(json.dumps(data, default=str) if self.as_json else human)

    def emit_line(self, data: Any) -> None:
        """One JSON Lines record (for streaming outputs)."""
        self.stdout.write(json.dumps(data, default=str))
