"""JSON log lines with the request id and workspace of the current request (structlog contextvars)."""
from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import structlog


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        payload.update(structlog.contextvars.get_contextvars())
        for key in ("workspace", "user", "conversation", "request_id", "task"):
            value = getattr(record, key, None)
            if value is not None:
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)
