"""Outbound webhooks (docs/webhooks.md): a workspace's endpoints receive the events they subscribe to, signed.

The lower floors only send signals (analytics.receivers connects them here). On the sender's path we do as little as
can be done: read the workspace's subscriptions from the cache, and only when an endpoint wants the event insert its
delivery rows and enqueue their tasks on commit. Everything that touches the network runs in the Celery worker.
Every delivery resolves the endpoint's host again and checks each address with the URL-import rules
(documents.fetch: private networks refused unless URL_IMPORT_ALLOWED_NETWORKS allows them), then connects to the
address it checked, so a DNS answer that changed after subscription (rebinding) reaches nothing inside.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import secrets
import socket
import threading
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.cache import cache
from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from analytics.errors import AnalyticsErrorCode
from analytics.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from config.errors import Conflict, NotFound, ValidationFailed

logger = logging.getLogger(__name__)

# Every event type (all emitted: analytics/receivers.py connects each to the signal that sends it).
EVENT_TYPES: dict[str, str] = {
    "conversation.created": "A conversation started (widget, API or dashboard).",
    "message.created": "A message was stored: the customer's, the assistant's answer or an agent's reply.",
    "handoff.requested": "The conversation waits for a person.",
    "conversation.closed": "An agent closed the conversation.",
    "feedback.received": "The customer rated an answer.",
    "lead.captured": "A visitor filled in (or corrected) the widget's lead form.",
    "document.indexed": "A document finished indexing.",
    "document.failed": "A document failed to index.",
    "source.synced": "A website source's crawl or re-sync ended (completed, stopped, failed or cancelled).",
}
TEST_EVENT = "webhook.test"
SIGNATURE_VERSION = "v1"
SECRET_PREFIX = "whsec_"
RESPONSE_EXCERPT_CHARS = 500
USER_AGENT = "CustomerCareGPT-Webhooks/1.0"
# An attempt in flight holds its delivery for its timeout plus this: past it, a crashed attempt is due again.
ATTEMPT_LEASE_GRACE_SECONDS = 30
_SUBSCRIPTIONS_KEY = "webhooks:subscriptions"


# --- signing -------------------------------------------------------------------------------------------------------
def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """`v1=<hex HMAC-SHA256 of "<timestamp>.<body>" under the secret>` — the Webhook-Signature header."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def _secret_new() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _secret_encrypt(secret: str) -> str:
    from chat.providers.secrets import secret_encrypt  # the one field cipher (FIELD_ENCRYPTION_KEY)

    return secret_encrypt(secret)


def _secret_decrypt(value: str) -> str:
    from chat.providers.secrets import secret_decrypt

    return secret_decrypt(value)


# --- the address rules of URL import ---------------------------------------------------------------------------------
def webhook_url_check(*, url: str, timeout: float = 5.0) -> tuple[str, list[str]]:
    """(url, checked addresses) or FetchError url_invalid / url_forbidden / url_unreachable (documents.fetch)."""
    from documents.fetch import url_addresses, url_validate

    url = url_validate(url)
    return url, url_addresses(url, deadline=time.monotonic() + timeout)


def _subscription_url_check(url: str) -> str:
    """At subscription: refuse what URL import refuses. A host that does not resolve (yet) is accepted — every
    delivery resolves and checks again, and records the failure."""
    from documents.fetch import FetchError

    try:
        return webhook_url_check(url=url)[0]
    except FetchError as exc:
        if exc.code in ("url_invalid", "url_forbidden"):
            raise
        return url.strip()


# --- endpoints -------------------------------------------------------------------------------------------------------
def _events_clean(events: Any) -> list[str]:
    if not isinstance(events, (list, tuple)) or not events:
        raise ValidationFailed("Choose at least one event.", details={"fields": {"events": ["At least one event."]}})
    unknown = sorted({str(e) for e in events} - set(EVENT_TYPES))
    if unknown:
        raise ValidationFailed("Unknown event type.", details={"fields": {"events": [f"Unknown: {', '.join(unknown)}. "
                                                                                   f"One of {sorted(EVENT_TYPES)}."]}})
    return sorted(set(events))


def _subscriptions_changed() -> None:
    transaction.on_commit(lambda: cache.delete(_SUBSCRIPTIONS_KEY))


def _audit(endpoint: WebhookEndpoint, actor: Any, action: str, data: dict[str, Any] | None = None) -> None:
    from accounts.services import audit_record

    user = actor if getattr(actor, "pk", None) and getattr(actor, "is_authenticated", False) else None
    audit_record(workspace=getattr(connection, "tenant", None), actor=user, action=action,
                 target=f"webhook {endpoint.pk} ({endpoint.url[:150]})", data=data or {},
                 actor_label=None if user is not None else (str(actor) if actor is not None else "operator"))


def webhook_endpoint_create(*, url: str, events: list[str], description: str = "", actor: Any = None
                            ) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret (returned here only: shown once)."""
    url = _subscription_url_check(url)
    events = _events_clean(events)
    secret = _secret_new()
    with transaction.atomic():
        # One create at a time per workspace (the table is the schema's own): the cap holds under concurrency.
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE analytics_webhookendpoint IN SHARE ROW EXCLUSIVE MODE")
        if WebhookEndpoint.objects.count() >= settings.WEBHOOK_ENDPOINTS_MAX:
            raise Conflict(f"A workspace can have at most {settings.WEBHOOK_ENDPOINTS_MAX} webhook endpoints; "
                           "delete one first.", code=AnalyticsErrorCode.TOO_MANY_WEBHOOKS,
                           details={"max": settings.WEBHOOK_ENDPOINTS_MAX})
        endpoint = WebhookEndpoint.objects.create(
            url=url, events=events, description=(description or "")[:200], secret_encrypted=_secret_encrypt(secret),
            secret_hint=secret[-4:], created_by_id=getattr(actor, "pk", None) if getattr(actor, "is_authenticated",
                                                                                            False) else None)
        _audit(endpoint, actor, "webhook.created", {"events": events})
        _subscriptions_changed()
    return endpoint, secret


def webhook_endpoint_update(*, endpoint: WebhookEndpoint, actor: Any = None, url: str | None = None,
                            events: list[str] | None = None, description: str | None = None,
                            is_active: bool | None = None) -> WebhookEndpoint:
    changes: dict[str, Any] = {}
    if url is not None and url != endpoint.url:
        endpoint.url = _subscription_url_check(url)
        changes["url"] = endpoint.url
    if events is not None:
        endpoint.events = _events_clean(events)
        changes["events"] = endpoint.events
    if description is not None:
        endpoint.description = description[:200]
    if is_active is not None and is_active != endpoint.is_active:
        endpoint.is_active = is_active
        changes["is_active"] = is_active
        if is_active:  # switched back on: a fresh start for the failure rule
            endpoint.disabled_at, endpoint.disabled_reason = None, ""
            endpoint.failing_since, endpoint.consecutive_failures = None, 0
    with transaction.atomic():
        endpoint.save()
        _audit(endpoint, actor, "webhook.updated", changes)
        _subscriptions_changed()
    return endpoint


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, actor: Any = None) -> None:
    with transaction.atomic():
        _audit(endpoint, actor, "webhook.deleted")
        endpoint.delete()
        _subscriptions_changed()


def webhook_secret_rotate(*, endpoint: WebhookEndpoint, actor: Any = None) -> tuple[WebhookEndpoint, str]:
    """A new secret (returned once); deliveries from now on are signed with it, the old one stops working."""
    secret = _secret_new()
    with transaction.atomic():
        endpoint.secret_encrypted, endpoint.secret_hint = _secret_encrypt(secret), secret[-4:]
        endpoint.secret_rotated_at = timezone.now()
        endpoint.save(update_fields=["secret_encrypted", "secret_hint", "secret_rotated_at", "updated_at"])
        _audit(endpoint, actor, "webhook.secret_rotated", {"hint": endpoint.secret_hint})
    return endpoint, secret


# --- selectors -------------------------------------------------------------------------------------------------------
def webhook_endpoint_list() -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.order_by("id")


def webhook_endpoint_get(*, endpoint_id: int) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound("No such webhook endpoint.")
    return endpoint


def webhook_delivery_list(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    return endpoint.deliveries.order_by("-id")


def webhook_delivery_get(*, endpoint: WebhookEndpoint, delivery_id: int) -> WebhookDelivery:
    delivery = endpoint.deliveries.filter(pk=delivery_id).first()
    if delivery is None:
        raise NotFound("No such delivery.")
    return delivery


def _subscriptions() -> list[tuple[int, frozenset[str]]]:
    """[(endpoint id, events)] of the active endpoints, from the cache (keys carry the schema: config/cache.py)."""
    found = cache.get(_SUBSCRIPTIONS_KEY)
    if found is None:
        found = [(pk, list(events)) for pk, events in
                 WebhookEndpoint.objects.filter(is_active=True).values_list("pk", "events")]
        cache.set(_SUBSCRIPTIONS_KEY, found, 300)
    return [(pk, frozenset(events)) for pk, events in found]


# --- emitting (the senders' path) -------------------------------------------------------------------------------------
def webhook_event_emit(*, event_type: str, data: dict[str, Any]) -> bool:
    """Queue `event_type` for the current workspace's active endpoints that subscribe to it. On the sender's path
    this is one cache read and, only when an endpoint wants the event, one broker message sent on commit; the
    worker writes the delivery rows and sends their attempts (webhook_event_fan_out). True when queued."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {event_type!r}")
    endpoint_ids = [pk for pk, events in _subscriptions() if event_type in events]
    if not endpoint_ids:
        return False
    envelope = _envelope(event_id=uuid.uuid4(), event_type=event_type, data=data)

    def send() -> None:
        from analytics.tasks import webhook_event_fan_out

        try:
            webhook_event_fan_out.apply_async((envelope, endpoint_ids), queue=settings.WEBHOOK_QUEUE)
        except Exception:  # the broker is down: the event is lost for webhooks, never for the sender
            logger.exception("webhooks: could not queue %s", event_type)

    transaction.on_commit(send)
    return True


def webhook_event_fan_out(*, envelope: dict[str, Any], endpoint_ids: list[int]) -> list[int]:
    """(worker) The delivery rows of one event for the endpoints that are still active and subscribed, and their
    first attempts. Returns the delivery ids."""
    from chat.models import Conversation

    wanted = list(WebhookEndpoint.objects.filter(pk__in=endpoint_ids, is_active=True,
                                                 events__contains=[envelope["type"]]).values_list("pk", flat=True))
    if not wanted:
        return []
    conversation = (envelope.get("data") or {}).get("conversation") or {}
    with transaction.atomic():
        if conversation.get("id"):
            # The event sat in the broker while its conversation was erased (a visitor's erasure, retention): its
            # copy of what the customer wrote must not be written now. The row lock orders us with an erasure
            # that is under way (it locks the same rows): it waits for these deliveries and deletes them too.
            alive = (Conversation.objects.select_for_update(no_key=True).filter(public_id=conversation["id"])
                     .values_list("pk", flat=True).first())
            if alive is None:
                return []
        return _deliveries_create(endpoint_ids=wanted, event_type=envelope["type"], data={}, envelope=envelope)


def _envelope(*, event_id: uuid.UUID, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    workspace = getattr(connection, "tenant", None)
    return {"id": str(event_id), "type": event_type, "created_at": timezone.now().isoformat(),
            "workspace": getattr(workspace, "slug", ""), "data": data}


def _deliveries_create(*, endpoint_ids: list[int], event_type: str, data: dict[str, Any], is_test: bool = False,
                       redelivery_of: WebhookDelivery | None = None, envelope: dict[str, Any] | None = None
                       ) -> list[int]:
    if redelivery_of is not None:
        event_id, payload = redelivery_of.event_id, redelivery_of.payload
    elif envelope is not None:
        event_id, payload = uuid.UUID(envelope["id"]), envelope
    else:
        event_id = uuid.uuid4()
        payload = _envelope(event_id=event_id, event_type=event_type, data=data)
    with transaction.atomic():
        rows = WebhookDelivery.objects.bulk_create([
            WebhookDelivery(endpoint_id=pk, event_id=event_id, event_type=event_type, payload=payload,
                            is_test=is_test, redelivery_of=redelivery_of) for pk in endpoint_ids])
        ids = [row.pk for row in rows]
        transaction.on_commit(lambda: _tasks_send(ids))
    return ids


def _tasks_send(delivery_ids: list[int], countdown: float | None = None) -> None:
    from analytics.tasks import webhook_deliver

    for delivery_id in delivery_ids:
        try:
            webhook_deliver.apply_async((delivery_id,), queue=settings.WEBHOOK_QUEUE, countdown=countdown)
        except Exception:  # the broker is down: beat's due sweep sends it (next_attempt_at is null = due)
            logger.exception("webhooks: could not enqueue delivery %s", delivery_id)


def webhook_test_send(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """A `webhook.test` event to this endpoint only (the dashboard's "send test event" button)."""
    ids = _deliveries_create(endpoint_ids=[endpoint.pk], event_type=TEST_EVENT, is_test=True,
                             data={"message": "A test event from CustomerCareGPT.", "endpoint_id": endpoint.pk})
    return WebhookDelivery.objects.get(pk=ids[0])


def webhook_redeliver(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """The same event (same id and body, a fresh timestamp and signature) as a new delivery with its own attempts."""
    if not delivery.endpoint.is_active:
        raise ValidationFailed("The endpoint is switched off; switch it on to redeliver.",
                               code=AnalyticsErrorCode.WEBHOOK_DISABLED)
    ids = _deliveries_create(endpoint_ids=[delivery.endpoint_id], event_type=delivery.event_type, data={},
                             is_test=delivery.is_test, redelivery_of=delivery)
    return WebhookDelivery.objects.get(pk=ids[0])


# --- delivering (the worker) -----------------------------------------------------------------------------------------
def retry_delay(*, attempt: int) -> int:
    """Seconds before retry number `attempt` (1, 2, ...): the base doubled each time, capped, with up to 10% added
    jitter so many failing deliveries don't retry in step. Each delay is still more than the previous one."""
    base = settings.WEBHOOK_RETRY_BASE_SECONDS * (2 ** max(attempt - 1, 0))
    capped = min(base, settings.WEBHOOK_RETRY_MAX_DELAY_SECONDS)
    return int(capped + random.uniform(0, capped * 0.1))


def _post(url: str, addresses: list[str], *, headers: dict[str, str], body: bytes, timeout: float
          ) -> tuple[int, str]:
    """POST to the first checked address that connects, with the URL's host in Host and TLS (SNI, certificate). The
    whole exchange (connect, headers, the excerpt) lasts at most `timeout`: a receiver that drips its status line or
    headers a byte at a time never trips httpx's per-read timeout, so at the deadline the socket is shut down."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    default_port = 443 if parts.scheme == "https" else 80
    port = parts.port or default_port
    host_header = host if port == default_port else f"{host}:{port}"
    if ":" in host:
        host_header = f"[{host}]" if port == default_port else f"[{host}]:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = _Deadline(seconds=timeout)
    last_error: Exception | None = None
    try:
        with httpx.Client(trust_env=False, follow_redirects=False, verify=True) as client:
            for address in addresses:
                netloc = f"[{address}]" if ":" in address else address
                extensions: dict[str, Any] = {"trace": deadline.trace}
                if parts.scheme == "https":
                    extensions["sni_hostname"] = host
                try:
                    # identity only, and the raw bytes read: a compressed reply (a zstd frame of 1 KB decodes to
                    # 32 MB) is never expanded in memory; what it says is kept as an excerpt, undecoded.
                    with client.stream("POST", f"{parts.scheme}://{netloc}:{port}{path}", content=body,
                                       headers={**headers, "Host": host_header, "Accept-Encoding": "identity"},
                                       extensions=extensions, timeout=httpx.Timeout(timeout)) as response:
                        return response.status_code, _excerpt_read(response, deadline=deadline)
                except httpx.ConnectError as exc:
                    last_error = exc
                    continue
                except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
                    if deadline.passed():
                        raise httpx.ReadTimeout("the endpoint did not answer in time") from exc
                    raise
    finally:
        deadline.cancel()
    raise last_error or httpx.ConnectError("no address")


class _Deadline:
    """Shuts down the socket of the connection in use when the time is up. The socket is learnt from httpcore's
    trace hook ("connection.connect_tcp.complete" carries the network stream), so it is known before any byte of
    the reply has arrived."""

    def __init__(self, *, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, name: str, info: dict[str, Any]) -> None:
        if name.endswith("connect_tcp.complete") or name.endswith("start_tls.complete"):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                with self._lock:
                    self._sockets.append(sock)
                if self.passed():
                    self._cut()

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def _cut(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self) -> None:
        self._timer.cancel()


def _excerpt_read(response: httpx.Response, *, deadline: _Deadline) -> str:
    """The first RESPONSE_EXCERPT_CHARS of the reply's raw body, read until the exchange's deadline at most."""
    excerpt = b""
    try:
        for piece in response.iter_raw(chunk_size=RESPONSE_EXCERPT_CHARS * 4):
            excerpt += piece
            if len(excerpt) >= RESPONSE_EXCERPT_CHARS * 4 or deadline.passed():
                break
    except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout):
        pass  # the status is what counts; a cut or broken body leaves what was read
    # PostgreSQL text cannot hold NUL: a reply with one (binary, compressed) made the attempt's save fail forever.
    text = excerpt[: RESPONSE_EXCERPT_CHARS * 4].decode("utf-8", "replace").replace("\x00", "\ufffd")
    return text[:RESPONSE_EXCERPT_CHARS]


def webhook_delivery_attempt(*, delivery_id: int) -> str:
    """One attempt of a due delivery; schedules the next one or gives up. Returns the delivery's status. Safe to run
    twice (a message redelivered by the broker): the row lock and next_attempt_at let only a due attempt through.

    The attempt is claimed (counted, and leased until its timeout has passed) and committed BEFORE the request: a
    worker killed mid-request leaves a counted attempt whose lease runs out, so beat's due sweep tries again and the
    retry window still ends it. Counting inside the request's transaction rolled the count back with the crash, and
    such a delivery was retried for ever. No transaction is open during the request."""
    from documents.fetch import FetchError

    claim = _attempt_claim(delivery_id=delivery_id)
    if isinstance(claim, str):
        return claim
    delivery, endpoint, headers, body, now = claim
    claimed_attempt = delivery.attempts
    started = time.perf_counter()
    refused = False
    status_code: int | None = None
    excerpt = error = ""
    try:
        url, addresses = webhook_url_check(url=endpoint.url)
        status_code, excerpt = _post(url, addresses, headers=headers, body=body,
                                     timeout=settings.WEBHOOK_TIMEOUT_SECONDS)
        if not 200 <= status_code < 300:
            error = f"The endpoint answered {status_code}."
    except FetchError as exc:
        refused = exc.code in ("url_invalid", "url_forbidden")
        error = exc.message
    except httpx.TimeoutException:
        error = "The endpoint did not answer in time."
    except httpx.HTTPError as exc:
        error = f"The endpoint could not be reached ({type(exc).__name__})."
    with transaction.atomic():
        delivery = (WebhookDelivery.objects.select_for_update(of=("self",)).select_related("endpoint")
                    .filter(pk=delivery_id).first())
        if delivery is None:  # erased meanwhile (a visitor's erasure, retention)
            return "missing"
        if delivery.attempts != claimed_attempt or delivery.status in (DeliveryStatus.DELIVERED,
                                                                        DeliveryStatus.FAILED):
            # This attempt outlived its lease (a paused or starved worker) and a later one has taken over or
            # settled it: its result is stale and must not overwrite theirs or schedule another send.
            return delivery.status
        delivery.latency_ms = int((time.perf_counter() - started) * 1000)
        delivery.response_status = status_code
        delivery.response_excerpt = excerpt
        if not error:
            delivery.delivered_at = timezone.now()
            _finish(delivery, DeliveryStatus.DELIVERED, error="", also=("delivered_at",))
            if endpoint.consecutive_failures or endpoint.failing_since:
                WebhookEndpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=0, failing_since=None)
            return delivery.status
        disabled = _endpoint_failure_count(endpoint, now=now)
        gave_up_at = delivery.created_at + timedelta(seconds=settings.WEBHOOK_RETRY_WINDOW_SECONDS)
        delay = retry_delay(attempt=delivery.attempts)
        if refused or disabled or now + timedelta(seconds=delay) > gave_up_at:
            reason = error if refused else ("The endpoint was switched off after failing." if disabled else
                                            f"Gave up after {delivery.attempts} attempts: {error}")
            delivery.next_attempt_at = None
            _finish(delivery, DeliveryStatus.FAILED, error=reason)
            return delivery.status
        delivery.retry_delays = [*delivery.retry_delays, delay]
        delivery.next_attempt_at = now + timedelta(seconds=delay)
        _finish(delivery, DeliveryStatus.RETRYING, error=error)
        if delay <= 300:  # longer waits are left to beat's due sweep (a broker holds an ETA message only so long)
            transaction.on_commit(lambda: _tasks_send([delivery_id], countdown=delay))
        return delivery.status


def _attempt_claim(*, delivery_id: int) -> str | tuple[WebhookDelivery, WebhookEndpoint, dict[str, str], bytes, Any]:
    """Count the attempt and lease the delivery for the attempt's longest time, committed; or the status to return
    when there is nothing to attempt (settled, not due, leased by an attempt in flight, endpoint switched off)."""
    now = timezone.now()
    with transaction.atomic():
        # Lock the delivery row only (of=self): FOR UPDATE over the join would also lock the endpoint's row, and
        # SKIP LOCKED would then skip every other delivery to that endpoint while one attempt is in flight.
        delivery = (WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
                    .select_related("endpoint").filter(pk=delivery_id).first())
        if delivery is None or delivery.status in (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED):
            return delivery.status if delivery is not None else "missing"
        if delivery.next_attempt_at is not None and delivery.next_attempt_at > now + timedelta(seconds=1):
            return delivery.status  # not due yet (an early duplicate), or an attempt in flight holds the lease
        endpoint = delivery.endpoint
        if not endpoint.is_active:
            _finish(delivery, DeliveryStatus.FAILED, error="The endpoint is switched off.")
            return delivery.status
        timestamp = int(time.time())
        body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json", "User-Agent": USER_AGENT,
            "Webhook-Id": str(delivery.event_id), "Webhook-Event": delivery.event_type,
            "Webhook-Timestamp": str(timestamp),
            "Webhook-Signature": webhook_signature(secret=_secret_decrypt(endpoint.secret_encrypted),
                                                   timestamp=timestamp, body=body),
        }
        delivery.attempts += 1
        delivery.last_attempt_at = now
        delivery.next_attempt_at = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS + ATTEMPT_LEASE_GRACE_SECONDS)
        delivery.save(update_fields=["attempts", "last_attempt_at", "next_attempt_at"])
    return delivery, endpoint, headers, body, now


def _finish(delivery: WebhookDelivery, status: str, *, error: str, also: tuple[str, ...] = ()) -> None:
    delivery.status = status
    delivery.error = error[:300]
    delivery.save(update_fields=["status", "error", "attempts", "last_attempt_at", "latency_ms", "response_status",
                                 "response_excerpt", "retry_delays", "next_attempt_at", *also])


def _endpoint_failure_count(endpoint: WebhookEndpoint, *, now: Any) -> bool:
    """Count a failed attempt; switch the endpoint off when it has failed for the whole disable window and at least
    WEBHOOK_DISABLE_AFTER_FAILURES times in a row (any success resets both). True when this switched it off."""
    locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    locked.consecutive_failures += 1
    locked.failing_since = locked.failing_since or now
    sustained = (locked.consecutive_failures >= settings.WEBHOOK_DISABLE_AFTER_FAILURES
                 and now - locked.failing_since >= timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_SECONDS))
    if sustained and locked.is_active:
        locked.is_active = False
        locked.disabled_at = now
        locked.disabled_reason = f"Failed {locked.consecutive_failures} times in a row since {locked.failing_since:%Y-%m-%d %H:%M} UTC."
        workspace = getattr(connection, "tenant", None)
        endpoint_url, reason = locked.url, locked.disabled_reason
        transaction.on_commit(lambda: _owners_tell(workspace=workspace, url=endpoint_url, reason=reason))
        _audit(locked, None, "webhook.disabled", {"reason": reason})
        _subscriptions_changed()
    locked.save(update_fields=["consecutive_failures", "failing_since", "is_active", "disabled_at", "disabled_reason"])
    return sustained


def _owners_tell(*, workspace: Any, url: str, reason: str) -> None:
    from accounts.models import Membership

    if workspace is None:
        return
    recipients = list(Membership.objects.filter(workspace=workspace, role="owner")
                      .values_list("user__email", flat=True))
    if not recipients:
        return
    try:
        send_mail(subject=f"[{workspace.name}] A webhook endpoint was switched off",
                  message=(f"Deliveries to {url} kept failing, so we stopped sending events to it.\n\n{reason}\n\n"
                           "Fix the endpoint, then switch it back on under Settings → Webhooks; you can redeliver "
                           "the failed events from there."),
                  from_email=settings.DEFAULT_FROM_EMAIL, recipient_list=recipients)
    except Exception:
        logger.exception("webhooks: could not tell the owners of %s", workspace.schema_name)


def webhook_deliveries_due() -> int:
    """Beat: forget settled deliveries older than WEBHOOK_LOG_DAYS; send the due ones (webhook_deliveries_due_ids).
    Duplicates are harmless (webhook_delivery_attempt). Returns the count sent."""
    now = timezone.now()
    WebhookDelivery.objects.filter(
        created_at__lt=now - timedelta(days=settings.WEBHOOK_LOG_DAYS),
        status__in=(DeliveryStatus.DELIVERED, DeliveryStatus.FAILED)).delete()
    due = webhook_deliveries_due_ids(now=now)
    _tasks_send(due)
    return len(due)


def webhook_deliveries_due_ids(*, now: Any) -> list[int]:
    """Deliveries to send now: a retry that is due, an attempt whose worker died (its lease has passed), a first
    message lost (pending two minutes without an attempt). At most 1,000, oldest first."""

    return list(WebhookDelivery.objects.filter(
        Q(status__in=(DeliveryStatus.RETRYING, DeliveryStatus.PENDING), next_attempt_at__lte=now)
        | Q(status=DeliveryStatus.PENDING, attempts=0, created_at__lt=now - timedelta(minutes=2))
    ).order_by("pk").values_list("pk", flat=True)[:1000])


def webhook_deliveries_forget_conversations(*, public_ids: list[str]) -> int:
    """The retention rule deleted these conversations: their deliveries (which copy what the customer wrote) go too."""
    deleted, _ = WebhookDelivery.objects.filter(payload__data__conversation__id__in=[str(p) for p in public_ids]).delete()
    return deleted
