"""Settings shared by every environment.

Everything comes from the environment (django-environ). Local and test settings add defaults that just work;
production settings refuse to start without the secrets (see production.py).
"""
from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
DATA_DIR = Path(environ.Env().str("CCGPT_DATA_DIR", default=str(BASE_DIR / ".data")))

env = environ.Env()
# `make run` / `make test` resolve the services (env, else localhost, else embedded) and write what they chose here.
# read_env never overrides a variable that is already set, so an exported DATABASE_URL always wins.
env.read_env(str(DATA_DIR / "services.env"))

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
# Fernet key(s) for secrets stored in the database (vendor API keys in AssistantSettings.providers); comma-separated
# to rotate (the first encrypts, all decrypt). Empty: derived from SECRET_KEY (local, test); production requires it.
FIELD_ENCRYPTION_KEY = env.str("FIELD_ENCRYPTION_KEY", default="")
BASE_DOMAIN = env.str("BASE_DOMAIN", default="localhost")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=[BASE_DOMAIN, f".{BASE_DOMAIN}", "127.0.0.1"])
# The scheme and port the outside world uses to reach us; used to build workspace URLs (links, redirects, snippets).
PUBLIC_SCHEME = env.str("PUBLIC_SCHEME", default="http")
PUBLIC_PORT = env.int("PUBLIC_PORT", default=8000)

# --- apps ------------------------------------------------------------------------------------------------------
SHARED_APPS = [
    "tenants",  # listed first so its migrate_schemas (a faster wrapper of django-tenants') wins the command lookup
    "django_tenants",
    "accounts",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "channels",
]
# Everything a workspace owns lives in its own schema.
TENANT_APPS = [
    "django.contrib.contenttypes",
    "documents",
    "chat",
    "embeds",
    "analytics",
]
INSTALLED_APPS = list(SHARED_APPS) + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Workspace"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_NAME = "public"
PUBLIC_SCHEMA_URLCONF = "config.urls_public"
ROOT_URLCONF = "config.urls_tenant"
SHOW_PUBLIC_IF_NO_TENANT_FOUND = False
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)
TENANT_LIMIT_SET_CALLS = True

MIDDLEWARE = [
    "config.middleware.RequestIdMiddleware",
    "config.health.HealthProbeMiddleware",  # /healthz, /readyz: before anything that needs the database
    "config.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files are the same on every host; served before host resolution so error pages of unknown or
    # suspended workspaces get their stylesheet too.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "tenants.middleware.WorkspaceMiddleware",  # resolves the workspace from the host (django-tenants)
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.MembershipMiddleware",
    "accounts.middleware.ApiRateLimitHeadersMiddleware",  # the plan's API budget (accounts.api_throttles)
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.middleware.ApiErrorMiddleware",
    "config.middleware.ContentSecurityPolicyMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.workspace_context",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

# --- data --------------------------------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/customercare")}
# django-tenants' backend, its SET search_path sent in the round trip of the first statement (config/postgresql).
DATABASES["default"]["ENGINE"] = "config.postgresql"
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        # Every cache key carries the schema of the workspace it was written in (config/cache.py).
        "KEY_FUNCTION": "config.cache.workspace_cache_key",
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "config.channels_layer.WorkspaceRedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL}],
            "prefix": env.str("CHANNELS_PREFIX", default="ccgpt"),
            "capacity": 1000,
            "expiry": 60,
        },
    }
}

# --- Celery ------------------------------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
# Must exceed the longest task's hard time limit (documents: ingest_large); a message unacknowledged for longer is
# redelivered (that is how a job of a worker that died is picked up again).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)}
CELERY_TASK_TIME_LIMIT = 600
CELERY_TASK_SOFT_TIME_LIMIT = 540
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BEAT_SCHEDULE = {
    # Close ended billing periods and grant the new ones (tenants.billing; use also rolls them lazily).
    "billing-periods-roll": {"task": "tenants.billing_periods_roll", "schedule": 15 * 60},
    # Purge conversations past each workspace's retention (chat.retention).
    "conversations-retention": {"task": "chat.retention_purge_all", "schedule": 60 * 60},
    # Cluster new questions and bring every workspace's analytics rollups up to date (analytics.tasks).
    "analytics-rollups-update": {"task": "analytics.rollups_update_all", "schedule": 5 * 60},
    # Hourly: each workspace whose local morning has come gets its daily digest of unanswered and thumbs-down
    # questions, once a day (chat.notifications).
    "staff-daily-digest": {"task": "chat.digest_send_all", "schedule": 60 * 60},
}
# Analytics (docs/analytics.md): an answer below this confidence counts as low-confidence; questions whose
# embeddings reach this cosine similarity to a cluster's centroid join it.
ANALYTICS_LOW_CONFIDENCE = env.float("ANALYTICS_LOW_CONFIDENCE", default=0.5)
ANALYTICS_CLUSTER_THRESHOLD = env.float("ANALYTICS_CLUSTER_THRESHOLD", default=0.85)
# Outbound webhooks (docs/webhooks.md): retries grow from the base delay, doubling, capped, for the retry window;
# an endpoint failing for the whole disable window *and* at least the failure count in a row is switched off.
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
WEBHOOK_RETRY_BASE_SECONDS = env.int("WEBHOOK_RETRY_BASE_SECONDS", default=30)
WEBHOOK_RETRY_MAX_DELAY_SECONDS = env.int("WEBHOOK_RETRY_MAX_DELAY_SECONDS", default=6 * 3600)
WEBHOOK_RETRY_WINDOW_SECONDS = env.int("WEBHOOK_RETRY_WINDOW_SECONDS", default=24 * 3600)
WEBHOOK_DISABLE_AFTER_SECONDS = env.int("WEBHOOK_DISABLE_AFTER_SECONDS", default=24 * 3600)
WEBHOOK_DISABLE_AFTER_FAILURES = env.int("WEBHOOK_DISABLE_AFTER_FAILURES", default=20)
WEBHOOK_QUEUE = env.str("WEBHOOK_QUEUE", default="default")
WEBHOOK_ENDPOINTS_MAX = env.int("WEBHOOK_ENDPOINTS_MAX", default=20)  # per workspace: every event fans out to each
WEBHOOK_LOG_DAYS = env.int("WEBHOOK_LOG_DAYS", default=30)  # settled deliveries are kept this long
CELERY_BEAT_SCHEDULE["webhooks-due-send"] = {"task": "analytics.webhook_deliveries_due_all", "schedule": 60}
# Payment provider seam (tenants.billing.BillingGateway): a dotted path to a class; empty: no gateway, no charges.
BILLING_GATEWAY = env.str("BILLING_GATEWAY", default="")

# --- auth --------------------------------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
PASSWORD_HASHERS = [
    "accounts.hashers.OwaspArgon2PasswordHasher",  # verifies any argon2 hash; re-hashes others on login
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
# Failed logins per (email) and per (IP) allowed in the window before the form refuses with a clear message.
LOGIN_THROTTLE = env.str("LOGIN_THROTTLE", default="10/15m")
SIGNUP_THROTTLE = env.str("SIGNUP_THROTTLE", default="10/h")
# Password-reset requests per IP and per e-mail address (counted whether or not the address has an account).
PASSWORD_RESET_THROTTLE_IP = env.str("PASSWORD_RESET_THROTTLE_IP", default="10/h")
PASSWORD_RESET_THROTTLE_EMAIL = env.str("PASSWORD_RESET_THROTTLE_EMAIL", default="3/h")
# Our own reverse proxies (IPs or CIDRs, comma-separated). X-Forwarded-For is read only from these; empty = trust
# nobody, the socket's peer is the client (config/client_ip.py, docs/operations.md "Client addresses").
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])
RATELIMIT_IP_META_KEY = "config.client_ip.client_ip"  # django-ratelimit's "ip" key (the widget's HTTP limits)
INVITATION_TTL_DAYS = 7

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"

# --- i18n / static -----------------------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(DATA_DIR / "media")))
CHROMA_URL = env.str("CHROMA_URL", default="")
CHROMA_PATH = Path(env.str("CHROMA_PATH", default=str(DATA_DIR / "chroma")))
# Embedded mode: the most memory one process spends on the vector indexes it has loaded (documents/vectors.py);
# 0: no memory bound (measurement only; Chroma's own cache is still never filled). docs/operations.md.
CHROMA_MEMORY_BUDGET_MB = env.int("CHROMA_MEMORY_BUDGET_MB", default=64)
# Workspaces with at most this many chunks are searched exactly from the vectors kept in their schema, in the process
# (documents/resident_vectors.py): no vector-store index is loaded for them. ~1.6 KB per chunk in memory, at most
# VECTORS_RESIDENT_BUDGET_MB per process (least recently used first). 0 for either: always the vector store.
VECTORS_RESIDENT_MAX_CHUNKS = env.int("VECTORS_RESIDENT_MAX_CHUNKS", default=2000)
VECTORS_RESIDENT_BUDGET_MB = env.int("VECTORS_RESIDENT_BUDGET_MB", default=32)

# --- knowledge: URL import and embeddings (documents/fetch.py, documents/embedding.py) ------------------------
# URL imports refuse private, loopback, link-local, ... targets; tests on loopback servers turn this on.
URL_IMPORT_ALLOW_PRIVATE = env.bool("URL_IMPORT_ALLOW_PRIVATE", default=False)
# Networks (CIDR) allowed even though they are private, e.g. an intranet wiki: ["10.20.0.0/16"].
URL_IMPORT_ALLOWED_NETWORKS = env.list("URL_IMPORT_ALLOWED_NETWORKS", default=[])
EMBEDDING_BACKEND = env.str("EMBEDDING_BACKEND", default="onnx")  # onnx (local all-MiniLM-L6-v2) | openai
EMBEDDING_URL = env.str("EMBEDDING_URL", default="")  # OpenAI-compatible base URL, e.g. https://api.example/v1
EMBEDDING_API_KEY = env.str("EMBEDDING_API_KEY", default="")
EMBEDDING_MODEL = env.str("EMBEDDING_MODEL", default="")
EMBEDDING_DIMENSION = env.int("EMBEDDING_DIMENSION", default=0)  # 0: learn it from the first answer
EMBEDDING_MAX_TOKENS = env.int("EMBEDDING_MAX_TOKENS", default=256)  # chunk window for the openai backend
# Texts per model call; 0: the backend's default (onnx 8: a quarter of the memory of 32 and faster on the small
# per-document groups the pipeline embeds, docs/knowledge.md "Measured"; openai 32 texts per request).
EMBEDDING_BATCH_SIZE = env.int("EMBEDDING_BATCH_SIZE", default=0)
EMBEDDING_THREADS = env.int("EMBEDDING_THREADS", default=0)  # onnxruntime intra-op threads; 0: every core
EMBEDDING_TIMEOUT = env.float("EMBEDDING_TIMEOUT", default=30.0)
# Sentence vectors retrieval's sentence signals keep per process, per workspace (documents/sentence_vectors.py);
# ~1.9 KB each with the 384-dimension model; a sentence's stems are kept the same way. 0: none kept (every question
# embeds its sentences). Bounded twice: entries, and RETRIEVAL_SENTENCE_CACHE_MB of vectors and stems (estimated).
# A small workspace's questions reach ~13-25 entries: 32,768 hold 1,000+ of them (issue #21's second round; 8,192
# sent every visit back to the stored rows).
RETRIEVAL_SENTENCE_CACHE_ENTRIES = env.int("RETRIEVAL_SENTENCE_CACHE_ENTRIES", default=32768)
RETRIEVAL_SENTENCE_CACHE_MB = env.int("RETRIEVAL_SENTENCE_CACHE_MB", default=64)
# The lexemes (with their chunk counts) of the workspaces retrieval read last, per process, for typo, name and
# sentence rules: ~100 bytes each; a vocabulary larger than the whole budget is read once per retrieval instead.
RETRIEVAL_VOCABULARY_CACHE_TERMS = env.int("RETRIEVAL_VOCABULARY_CACHE_TERMS", default=300_000)
# A workspace with at most this many chunks gets its sentences' vectors stored at ingestion (~8 ms of worker CPU per
# sentence, ~1.5 KB each in its schema), so a process's first question there embeds only the question (issue #21).
# Larger ones store the sentences their questions embed. 0: never at ingestion.
RETRIEVAL_SENTENCE_VECTORS_AT_INGESTION_MAX_CHUNKS = env.int("RETRIEVAL_SENTENCE_VECTORS_AT_INGESTION_MAX_CHUNKS",
                                                             default=200)
# Load the embedding model, tokenizer and vector client in a background thread when a web or worker process starts,
# so the first question after a start is not the slow one (config/warmup.py, docs/operations.md "Warm-up").
WARM_UP_ON_START = env.bool("WARM_UP_ON_START", default=True)
# /readyz says "not ready" while the warm-up runs, for at most this long after the start (0: never waits).
WARM_UP_READY_MAX_SECONDS = env.float("WARM_UP_READY_MAX_SECONDS", default=60.0)
# Knowledge base (documents): per-file cap, and the retry policy of ingestion jobs (documents/pipeline.py).
DOCUMENT_MAX_BYTES = env.int("DOCUMENT_MAX_BYTES", default=25 * 1024 * 1024)
DOCUMENT_RETRY_MAX = env.int("DOCUMENT_RETRY_MAX", default=5)
DOCUMENT_RETRY_BACKOFF_MAX = env.int("DOCUMENT_RETRY_BACKOFF_MAX", default=600)
# {"queue": [soft, hard]} seconds, over documents.services.DEFAULT_TIME_LIMITS; applied by whoever sends the job.
DOCUMENT_TIME_LIMITS = env.json("DOCUMENT_TIME_LIMITS", default={})
DOCUMENT_URL_TIMEOUT = env.int("DOCUMENT_URL_TIMEOUT", default=20)  # seconds for a whole URL import
# A queued, processing or retrying document with no sign of life (queueing, heartbeat, due retry) for this many
# seconds has lost its job (a broker restarted without persistence); beat sends it again (documents/tasks.py).
DOCUMENT_STALLED_AFTER = env.int("DOCUMENT_STALLED_AFTER", default=900)
CELERY_BEAT_SCHEDULE["documents-stalled-resend"] = {
    "task": "documents.stalled_resend_all", "schedule": env.int("DOCUMENT_STALLED_SWEEP_EVERY", default=300),
}
# Websites as sources (documents/sources.py, docs/knowledge.md "Websites"): parallel requests per site, the least
# time between two requests' starts (robots.txt's crawl-delay wins when larger), the length of one slice of a run
# (it then sends itself again), and when a run without a heartbeat counts as stalled (beat sends it again).
SOURCE_CONCURRENCY = env.int("SOURCE_CONCURRENCY", default=2)
SOURCE_DELAY = env.float("SOURCE_DELAY", default=0.25)
SOURCE_SLICE_SECONDS = env.float("SOURCE_SLICE_SECONDS", default=30)
SOURCE_STALLED_AFTER = env.int("SOURCE_STALLED_AFTER", default=300)
# Bounds per run on what a site can make us record (docs/knowledge.md "Websites"): sitemap files read, and
# addresses recorded (pending or skipped) per page the source may hold.
SOURCE_MAX_SITEMAPS = env.int("SOURCE_MAX_SITEMAPS", default=200)
SOURCE_MAX_ROWS_PER_PAGE = env.int("SOURCE_MAX_ROWS_PER_PAGE", default=20)
SOURCE_QUEUE = env.str("SOURCE_QUEUE", default="")  # empty: the ingest queue
CELERY_BEAT_SCHEDULE["sources-sync-due"] = {
    "task": "documents.sources_sync_due_all", "schedule": env.int("SOURCE_SYNC_SWEEP_EVERY", default=300),
}

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
# Only read by the file-based backend (browser tests read invitation emails from this folder).
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", default=str(DATA_DIR / "mail"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="CustomerCareGPT <no-reply@customercare.local>")

# --- API ---------------------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "accounts.authentication.WorkspaceSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.permissions.HasWorkspacePermission"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "config.parsers.StrictJSONParser", "config.parsers.StrictFormParser", "config.parsers.StrictMultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "config.pagination.ApiPagination",
    "PAGE_SIZE": 50,
    # Per API key, per signed-in user, per anonymous client address: API_THROTTLE_RATES; per workspace: its plan's
    # api_requests_per_minute (accounts.api_throttles).
    "DEFAULT_THROTTLE_CLASSES": [
        "accounts.api_throttles.ApiKeyRateThrottle", "accounts.api_throttles.ApiUserRateThrottle",
        "accounts.api_throttles.ApiAnonRateThrottle", "accounts.api_throttles.WorkspacePlanRateThrottle",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "CustomerCareGPT API",
    "DESCRIPTION": "Workspace API. Authenticate with `Authorization: Api-Key <key>` or a dashboard session.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from our own static files (the sidecar package), its start-up script from a URL: the docs page runs
    # under the same Content-Security-Policy as every other page.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
# REST API requests per fixed window (config.throttle.parse_rate format), counted per workspace; over it: 429
# `rate_limited` with Retry-After. `?limit=` of paginated lists is capped at API_PAGE_MAX_LIMIT (docs/api.md).
API_THROTTLE_RATES = {
    "api_key": env.str("API_THROTTLE_KEY", default="1200/m"),
    "api_user": env.str("API_THROTTLE_USER", default="600/m"),
    "api_anon": env.str("API_THROTTLE_ANON", default="60/m"),
}
# On top of those, each workspace's plan's api_requests_per_minute for its API keys (WorkspacePlanRateThrottle).
API_PLAN_RATE_LIMITS = env.bool("API_PLAN_RATE_LIMITS", default=True)
API_PAGE_MAX_LIMIT = env.int("API_PAGE_MAX_LIMIT", default=200)
CORS_URLS_REGEX = r"^/widget/.*$"
CORS_ALLOWED_ORIGINS: list[str] = []

# --- provisioning ------------------------------------------------------------------------------------------------
# Pre-provisioned schemas kept warm so a signup takes one (ALTER SCHEMA ... RENAME) instead of building one.
WORKSPACE_POOL_SIZE = env.int("WORKSPACE_POOL_SIZE", default=5)
# Refill the pool in the request's process (thread) when no worker is around; Celery does it otherwise.
WORKSPACE_POOL_REFILL = env.str("WORKSPACE_POOL_REFILL", default="celery")  # celery | inline | off

# --- logging -----------------------------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "config.logging.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "uvicorn.access": {"level": "WARNING"},
    },
}

# --- chat: conversations and the real-time protocol (chat/, docs/websocket-protocol.md) -------------------------
CHAT_MESSAGE_MAX_CHARS = env.int("CHAT_MESSAGE_MAX_CHARS", default=4000)
CHAT_WS_MAX_FRAME_BYTES = env.int("CHAT_WS_MAX_FRAME_BYTES", default=16384)
CHAT_WS_IDLE_TIMEOUT = env.float("CHAT_WS_IDLE_TIMEOUT", default=90.0)  # seconds without any client frame
CHAT_WS_PING_INTERVAL = env.float("CHAT_WS_PING_INTERVAL", default=25.0)  # what clients are told to use
CHAT_WS_FRAME_RATE = env.float("CHAT_WS_FRAME_RATE", default=10.0)  # frames per second per socket, sustained
CHAT_WS_FRAME_BURST = env.int("CHAT_WS_FRAME_BURST", default=30)
CHAT_WS_MESSAGE_RATE = env.float("CHAT_WS_MESSAGE_RATE", default=0.5)  # questions per second per socket, sustained
CHAT_WS_MESSAGE_BURST = env.int("CHAT_WS_MESSAGE_BURST", default=5)
# A socket's authority (role, embed, workspace status) is re-read before a state-changing frame once it is older
# than this many seconds, and at once on a revocation broadcast (chat.authority).
CHAT_WS_AUTHORITY_TTL = env.float("CHAT_WS_AUTHORITY_TTL", default=2.0)
CHAT_ANSWER_WORKERS = env.int("CHAT_ANSWER_WORKERS", default=16)  # threads (and DB connections) answering per process
CHAT_ANSWER_TIMEOUT = env.float("CHAT_ANSWER_TIMEOUT", default=180.0)
CHAT_EVENT_LOG_MAXLEN = env.int("CHAT_EVENT_LOG_MAXLEN", default=5000)  # events kept per conversation for resume
CHAT_EVENT_LOG_TTL = env.int("CHAT_EVENT_LOG_TTL", default=86400)  # seconds after the last event

READINESS_CHECK_TIMEOUT = 2.0
OPS_TOKEN = env.str("OPS_TOKEN", default="")
METRICS_REQUIRE_TOKEN = env.bool("METRICS_REQUIRE_TOKEN", default=False)

# --- widget: embeds, the loader, the frame and its visitors (embeds/, docs/widget.md) ---------------------------
WIDGET_TOKEN_TTL = env.int("WIDGET_TOKEN_TTL", default=900)  # seconds a visitor token is accepted
# Identity verification: a signed `user_ts` is accepted this long (s), and this far ahead of our clock (docs/widget.md).
WIDGET_IDENTITY_MAX_AGE = env.int("WIDGET_IDENTITY_MAX_AGE", default=86400)
WIDGET_IDENTITY_CLOCK_SKEW = env.int("WIDGET_IDENTITY_CLOCK_SKEW", default=300)
WIDGET_CONFIG_MAX_AGE = env.int("WIDGET_CONFIG_MAX_AGE", default=60)  # browser cache of /widget/v1/config/
WIDGET_LOADER_MAX_AGE = env.int("WIDGET_LOADER_MAX_AGE", default=86400)  # browser/CDN cache of loader.js
# Rate limits ("count/[n]unit", e.g. "120/m", "10/5m"). HTTP: every widget request, per IP, per embed, per workspace;
# visitor sessions (token minting) per IP. WebSocket: connections per IP; questions per IP, per embed, per workspace
# (and, on top of those, the plan's chat_messages_per_minute when it sets one).
WIDGET_RATE_HTTP_IP = env.str("WIDGET_RATE_HTTP_IP", default="240/m")
WIDGET_RATE_HTTP_EMBED = env.str("WIDGET_RATE_HTTP_EMBED", default="6000/m")
WIDGET_RATE_HTTP_WORKSPACE = env.str("WIDGET_RATE_HTTP_WORKSPACE", default="12000/m")
WIDGET_RATE_SESSION_IP = env.str("WIDGET_RATE_SESSION_IP", default="30/m")
WIDGET_RATE_SOCKET_IP = env.str("WIDGET_RATE_SOCKET_IP", default="60/m")
WIDGET_RATE_MESSAGE_IP = env.str("WIDGET_RATE_MESSAGE_IP", default="20/m")
WIDGET_RATE_MESSAGE_EMBED = env.str("WIDGET_RATE_MESSAGE_EMBED", default="600/m")
WIDGET_RATE_MESSAGE_WORKSPACE = env.str("WIDGET_RATE_MESSAGE_WORKSPACE", default="1200/m")
# Daily answer caps of the widget (UTC days; 0 = no cap): questions a visitor, and an embed, may ask per day, so a
# script can't burn a workspace's credits anonymously (visitor_daily_limit / embed_daily_limit, 429 + Retry-After).
WIDGET_ANSWERS_PER_VISITOR_DAY = env.int("WIDGET_ANSWERS_PER_VISITOR_DAY", default=200)
WIDGET_ANSWERS_PER_EMBED_DAY = env.int("WIDGET_ANSWERS_PER_EMBED_DAY", default=10000)
# Spend spike alert: credits spent by a workspace in the current hour above SPEND_SPIKE_MULTIPLE x its hourly
# average of the previous 24 hours (and at least SPEND_SPIKE_MIN_ANSWERS) logs a warning and e-mails the owners,
# once per hour (tenants/billing.py). 0 = off.
SPEND_SPIKE_MULTIPLE = env.float("SPEND_SPIKE_MULTIPLE", default=5.0)
SPEND_SPIKE_MIN_ANSWERS = env.int("SPEND_SPIKE_MIN_ANSWERS", default=100)
