"""The analytics dashboard (issue #7): one page rendered on the server from the same selectors the API serves, so the
numbers are identical; the charts are drawn in the browser (static/js/charts.js) from the same data, embedded with
json_script. Every table downloads as CSV, and transcripts as CSV or JSON Lines, with the page's filters."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.permissions import workspace_permission_required
from accounts.services import audit_record
from analytics import exports, selectors
from analytics.home import workspace_home_state
from analytics.selectors import AnalyticsFilters
from config.errors import NotFound, ValidationFailed
from embeds.selectors import embed_list

ROLLUP_PERIOD_SECONDS = settings.CELERY_BEAT_SCHEDULE["analytics-rollups-update"]["schedule"]
FILTER_PARAMS = ("start", "end", "tz", "interval", "embed")
INTERVALS = (("hour", "Hour"), ("day", "Day"), ("week", "Week"))
FIELD_LABELS = {"start": "From", "end": "To", "tz": "Time zone", "interval": "Group by", "embed": "Widget"}
STREAM_BATCH_LINES = 500


def _filter_params(request: HttpRequest) -> dict[str, str]:
    """The filter parameters that were given (empty ones left out, so the selectors' defaults apply)."""
    return {name: request.GET[name].strip() for name in FILTER_PARAMS if request.GET.get(name, "").strip()}


def _filter_form(filters: AnalyticsFilters | None, params: dict[str, str]) -> dict[str, str]:
    """The values the filter form shows: the parsed filters, or what was typed when it could not be parsed."""
    if filters is None:
        return {name: params.get(name, "") for name in FILTER_PARAMS}
    # The range is half-open [start, end); the form shows the last day included.
    last = filters.end - timedelta(microseconds=1)
    return {
        "start": filters.start.astimezone(filters.tz).date().isoformat(),
        "end": last.astimezone(filters.tz).date().isoformat(),
        "tz": filters.tz.key,
        "interval": filters.interval,
        "embed": "" if filters.embed_id is None else str(filters.embed_id),
    }


def analytics_page_data(filters: AnalyticsFilters) -> dict[str, Any]:
    """Everything the page shows, straight from the selectors (the API returns the same dicts)."""
    return {
        "summary": selectors.analytics_summary(filters),
        "queries_over_time": selectors.analytics_queries_over_time(filters),
        "top_queries": selectors.analytics_top_queries(filters),
        "unanswered": selectors.analytics_unanswered(filters),
        "documents": selectors.analytics_documents(filters),
        "embeds": selectors.analytics_embeds(filters),
        "quality": selectors.analytics_quality(filters),
        "handoffs": selectors.analytics_handoffs(filters),
    }


def _freshness(freshness: dict[str, Any]) -> dict[str, Any]:
    """Top questions' freshness line: when questions were last grouped, in the page's time zone."""
    at = freshness["grouped_at"]
    return {**freshness, "grouped_at_display": at[:16].replace("T", " ") if at else None,
            "every_minutes": max(1, round(ROLLUP_PERIOD_SECONDS / 60))}


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def _ms(value: Any) -> str:
    return "–" if value is None else f"{int(round(value))} ms"


def summary_cards(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary cards: the selector's values (data-value) and how the page shows them."""
    cards = [
        ("conversations", "Conversations", f"{summary['conversations']}", None),
        ("questions", "Questions", f"{summary['questions']}",
         f"{summary['answered']} answered · {summary['unanswered']} unanswered · "
         f"{summary['low_confidence']} low confidence"),
        ("resolution_rate", "Resolution rate", _percent(summary["resolution_rate"]), "answered without a handoff"),
        ("first_token_p50_ms", "First token p50", _ms(summary["first_token_p50_ms"]),
         "half of the answers start faster"),
        ("first_token_p95_ms", "First token p95", _ms(summary["first_token_p95_ms"]), "95 % start faster"),
        ("satisfaction", "Satisfaction", _percent(summary["satisfaction"]),
         f"{summary['feedback_up']} helpful · {summary['feedback_down']} not helpful"),
        ("handoffs", "Handoffs", f"{summary['handoffs']}", None),
        ("tokens", "Tokens", f"{summary['tokens_in'] + summary['tokens_out']}",
         f"{summary['tokens_in']} in · {summary['tokens_out']} out"),
        ("cost", "Cost", f"{summary['cost']}", None),
    ]
    values = {**summary, "tokens": summary["tokens_in"] + summary["tokens_out"]}
    return [{"key": key, "label": label, "display": display, "note": note, "value": values[key]}
            for key, label, display, note in cards]


def _range_label(filters: AnalyticsFilters, embeds: list[Any]) -> str:
    """What the numbers cover, in the chosen time zone: '2026-10-23 05:10 – 2026-11-22 05:10 (UTC) · Shop'."""
    start, end = filters.start.astimezone(filters.tz), filters.end.astimezone(filters.tz)
    label = f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} ({filters.tz.key})"
    if filters.embed_id is not None:
        name = next((embed.name for embed in embeds if embed.pk == filters.embed_id), f"widget #{filters.embed_id}")
        label += f" · {name} only"
    return label


def _chart_data(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "queries_over_time": data["queries_over_time"],
        "latency_over_time": data["quality"]["latency_over_time"],
        "handoffs": data["handoffs"],
        "documents": [{**row, "title": row["title"] if row["title"] is not None else "(deleted document)"}
                      for row in data["documents"]["used"][:15]],
    }


@workspace_permission_required("workspace.view")
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """The dashboard's home: the set-up checklist, then the week at a glance (analytics.home)."""
    return render(request, "dashboard/home.html",
                  {"home": workspace_home_state(workspace=request.tenant, role=request.role)})


@workspace_permission_required("analytics.view")
@require_GET
def analytics_index(request: HttpRequest) -> HttpResponse:
    params = _filter_params(request)
    try:
        filters = selectors.analytics_filters_parse(params)
    except ValidationFailed as error:
        fields = error.details.get("fields") if isinstance(error.details.get("fields"), dict) else {}
        return render(request, "analytics/index.html", {
            "error": error,
            "error_lines": [(FIELD_LABELS.get(name, name), "; ".join(map(str, problems if isinstance(problems, list)
                                                                            else [problems])))
                            for name, problems in fields.items()],
            "invalid": set(fields),
            "form": _filter_form(None, params), "intervals": INTERVALS, "embed_choices": embed_list(),
        }, status=400)
    data = analytics_page_data(filters)
    embeds = list(embed_list())
    return render(request, "analytics/index.html", {
        **data,
        "cards": summary_cards(data["summary"]),
        "range_label": _range_label(filters, embeds),
        "filters": filters,
        "form": _filter_form(filters, params),
        "intervals": INTERVALS,
        "embed_choices": embeds,
        "embed_usage": data["embeds"],
        "unanswered_rows": [{**row, "last_asked_display": (row["last_asked_at"] or "")[:16].replace("T", " ")}
                            for row in data["unanswered"]],
        "quality_ratio": _percent(data["quality"]["ratio"]),
        "top_freshness": _freshness(selectors.analytics_top_queries_freshness(filters)),
        "chart_data": _chart_data(data),
        "export_query": urlencode(_query_params(filters)),
        "export_tables": [(name, name.replace("-", " ").capitalize()) for name in exports.TABLES],
    })


@workspace_permission_required("analytics.view")
@require_GET
def analytics_review(request: HttpRequest) -> HttpResponse:
    """The review queue (issue #17): answers rated not helpful, declined and low-confidence ones, grouped by question
    cluster, each one click from "write the right answer" (a curated answer) or "add to knowledge" (an FAQ entry)."""
    return render(request, "analytics/review.html", {"groups": selectors.review_queue(),
                                                      "days": selectors.REVIEW_DAYS})


def _query_params(filters: AnalyticsFilters) -> dict[str, str]:
    """The parsed filters as query parameters (exports linked from the page get exactly the page's range)."""
    params = {"start": filters.start.isoformat(), "end": filters.end.isoformat(), "tz": filters.tz.key,
              "interval": filters.interval}
    if filters.embed_id is not None:
        params["embed"] = str(filters.embed_id)
    return params


# --- exports -----------------------------------------------------------------------------------------------------


def _streamed(request: HttpRequest, lines: Iterator[str]) -> Iterator[str] | AsyncIterator[str]:
    """Under ASGI, Django would buffer a synchronous iterator whole before sending it; hand it an asynchronous one
    that pulls a batch of lines at a time in the request's thread (where the workspace's schema is set)."""
    if not isinstance(request, ASGIRequest):
        return lines
    tenant = connection.tenant

    def next_batch() -> str:
        connection.set_tenant(tenant)
        batch = []
        for line in lines:
            batch.append(line)
            if len(batch) >= STREAM_BATCH_LINES:
                break
        return "".join(batch)

    async def stream() -> AsyncIterator[str]:
        while True:
            chunk = await sync_to_async(next_batch, thread_sensitive=True)()
            if not chunk:
                return
            yield chunk

    return stream()


def _download(request: HttpRequest, lines: Iterator[str], *, name: str, extension: str, content_type: str,
              filters: AnalyticsFilters) -> StreamingHttpResponse:
    audit_record(
        workspace=request.tenant, actor=request.user, action="analytics.exported", target=f"{name}.{extension}",
        data={"start": filters.start.isoformat(), "end": filters.end.isoformat(), "tz": filters.tz.key,
              "interval": filters.interval, "embed_id": filters.embed_id},
    )
    response = StreamingHttpResponse(_streamed(request, lines), content_type=content_type)
    stamp = f"{filters.start.astimezone(filters.tz):%Y%m%d}-{filters.end.astimezone(filters.tz):%Y%m%d}"
    response["Content-Disposition"] = f'attachment; filename="{name}-{request.tenant.slug}-{stamp}.{extension}"'
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@workspace_permission_required("analytics.view")
@require_GET
def analytics_export(request: HttpRequest, table: str) -> HttpResponse:
    if table not in exports.TABLES:
        raise NotFound("There is no analytics table of that name.", details={"table": table})
    filters = selectors.analytics_filters_parse(_filter_params(request))  # ValidationFailed → 400 page / JSON
    return _download(request, exports.analytics_table_csv(table=table, filters=filters), name=table, extension="csv",
                     content_type="text/csv; charset=utf-8", filters=filters)


@workspace_permission_required("analytics.view")
@require_GET
def analytics_export_transcripts(request: HttpRequest, fmt: str) -> HttpResponse:
    if fmt not in ("csv", "jsonl"):
        raise NotFound("Transcripts download as .csv or .jsonl.", details={"format": fmt})
    filters = selectors.analytics_filters_parse(_filter_params(request))
    if fmt == "csv":
        return _download(request, exports.transcripts_csv(filters), name="transcripts", extension="csv",
                         content_type="text/csv; charset=utf-8", filters=filters)
    return _download(request, exports.transcripts_jsonl(filters), name="transcripts", extension="jsonl",
                     content_type="application/x-ndjson; charset=utf-8", filters=filters)
