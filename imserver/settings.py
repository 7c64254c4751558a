"""Settings, read from the environment with embedded defaults.

With no environment at all the server runs on SQLite (WAL) in XMPP_DATA_DIR,
an in-memory channel layer and eager Celery. Operators script against the
variable names below; keep them stable and documented in the README.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value in ("1", "true", "yes", "on")


XMPP_DATA_DIR = Path(os.environ.get("XMPP_DATA_DIR", BASE_DIR / "data")).resolve()
XMPP_DOMAIN = os.environ.get("XMPP_DOMAIN", "localhost").strip().lower()
XMPP_BIND_ADDRESS = os.environ.get("XMPP_BIND_ADDRESS", "0.0.0.0")
XMPP_C2S_PORT = env_int("XMPP_C2S_PORT", 5222)
XMPP_C2S_TLS_PORT = env_int("XMPP_C2S_TLS_PORT", 5223)
XMPP_HTTP_PORT = env_int("XMPP_HTTP_PORT", 5280)
XMPP_TLS_CERT = os.environ.get("XMPP_TLS_CERT", "")
XMPP_TLS_KEY = os.environ.get("XMPP_TLS_KEY", "")
# RFC 6120 §5.1: TLS is mandatory-to-negotiate unless the operator says otherwise.
XMPP_REQUIRE_TLS = env_bool("XMPP_REQUIRE_TLS", True)
XMPP_SCRAM_ITERATIONS = env_int("XMPP_SCRAM_ITERATIONS", 4096)
XMPP_OFFLINE_QUOTA = env_int("XMPP_OFFLINE_QUOTA", 1000)  # XEP-0160 messages kept per account
# XEP-0352: stanzas held for an inactive client (xmpp/csi.py); past it, all are sent.
XMPP_CSI_MAX_HELD = env_int("XMPP_CSI_MAX_HELD", 256)

# Limits (RFC 6120 §13.12). Rates shape (xmpp/shaping.py): a client over one
# is read more slowly, never disconnected; what shaping cannot bound (size,
# depth, a client that never reads) ends the stream with <policy-violation/>.
XMPP_MAX_STANZA_SIZE = env_int("XMPP_MAX_STANZA_SIZE", 256 * 1024)
XMPP_MAX_DEPTH = env_int("XMPP_MAX_DEPTH", 64)
XMPP_MAX_ATTRIBUTES = env_int("XMPP_MAX_ATTRIBUTES", 64)
# Streams of the whole process (also held to the open-files limit); over it
# a new connection is refused.
XMPP_MAX_CONNECTIONS = env_int("XMPP_MAX_CONNECTIONS", 100_000)
# Streams from one address that have not authenticated yet; a new one past
# this closes the oldest of them (xmpp/admission.py).
XMPP_MAX_UNAUTHENTICATED_PER_IP = env_int("XMPP_MAX_UNAUTHENTICATED_PER_IP", 50)
# Authenticated sessions from one address; 0: no cap (many users share a NAT).
XMPP_MAX_SESSIONS_PER_IP = env_int("XMPP_MAX_SESSIONS_PER_IP", 0)
XMPP_STANZAS_PER_SECOND = env_int("XMPP_STANZAS_PER_SECOND", 500)
XMPP_STANZAS_BURST = env_int("XMPP_STANZAS_BURST", 0)  # 0: two seconds' worth
XMPP_C2S_BYTES_PER_SECOND = env_int("XMPP_C2S_BYTES_PER_SECOND", 256 * 1024)  # 0: no limit
XMPP_C2S_BYTES_BURST = env_int("XMPP_C2S_BYTES_BURST", 0)  # 0: two seconds' worth
XMPP_AUTH_TIMEOUT = env_int("XMPP_AUTH_TIMEOUT", 30)
XMPP_MAX_OUTGOING_BUFFER = env_int("XMPP_MAX_OUTGOING_BUFFER", 1024 * 1024)
# XEP-0198 stream management (xmpp/stream_management.py)
XMPP_SM_RESUME_TIMEOUT = env_int("XMPP_SM_RESUME_TIMEOUT", 300)  # seconds a dropped session waits
XMPP_SM_MAX_RESUME_TIMEOUT = env_int("XMPP_SM_MAX_RESUME_TIMEOUT", 900)  # cap on the client's max
XMPP_SM_MAX_QUEUE = env_int("XMPP_SM_MAX_QUEUE", 500)  # unacked stanzas a detached session keeps
XMPP_SM_ACK_EVERY = env_int("XMPP_SM_ACK_EVERY", 25)  # unacked stanzas before the server asks
XMPP_SM_ACK_DELAY = float(os.environ.get("XMPP_SM_ACK_DELAY", "2.0"))  # seconds before it asks
# RFC 7395 over ws:// on a development server: count the stream as secure
# (PLAIN offered), as Prosody's consider_websocket_secure does.
XMPP_WEBSOCKET_CONSIDER_SECURE = env_bool("XMPP_WEBSOCKET_CONSIDER_SECURE", False)
XMPP_WEBSOCKET_ORIGINS = [
    o.strip() for o in os.environ.get("XMPP_WEBSOCKET_ORIGINS", "*").split(",") if o.strip()
]
XMPP_LOG_SQL = env_bool("XMPP_LOG_SQL", False)
XMPP_BLOCKLIST_MAX_ITEMS = env_int("XMPP_BLOCKLIST_MAX_ITEMS", 1000)
XMPP_ROSTER_MAX_ITEMS = env_int("XMPP_ROSTER_MAX_ITEMS", 1000)
# Failed logins per (address, account) and per account (xmpp/failed_logins.py):
# answered after this delay, doubling with each failure, up to the maximum.
XMPP_AUTH_FAILURE_DELAY = float(os.environ.get("XMPP_AUTH_FAILURE_DELAY", "1.0"))
XMPP_AUTH_FAILURE_MAX_DELAY = float(os.environ.get("XMPP_AUTH_FAILURE_MAX_DELAY", "30.0"))

# XEP-0077: accounts made by anyone who connects; off unless the operator says so.
XMPP_REGISTRATION_ENABLED = env_bool("XMPP_REGISTRATION_ENABLED", False)
# XEP-0054: the largest vCard a user may store, in bytes of XML.
XMPP_VCARD_MAX_SIZE = env_int("XMPP_VCARD_MAX_SIZE", 64 * 1024)
# XEP-0357 push notifications (xmpp/push.py): what a notification tells the
# app server (the body crosses it and the vendor's push network, so off by
# default), how long its answer may take, registrations per account.
XMPP_PUSH_INCLUDE_BODY = env_bool("XMPP_PUSH_INCLUDE_BODY", False)
XMPP_PUSH_INCLUDE_SENDER = env_bool("XMPP_PUSH_INCLUDE_SENDER", True)
XMPP_PUSH_TIMEOUT = env_int("XMPP_PUSH_TIMEOUT", 30)
XMPP_PUSH_MAX_REGISTRATIONS = env_int("XMPP_PUSH_MAX_REGISTRATIONS", 20)


def load_or_create_secret_key(data_dir: Path) -> str:
    """A per-installation key kept in the data directory, made on first start."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    import secrets

    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    path.write_text(key)
    path.chmod(0o600)
    return key


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or load_or_create_secret_key(XMPP_DATA_DIR)
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("DJANGO_ALLOWED_HOSTS", f"localhost,127.0.0.1,{XMPP_DOMAIN}").split(",")
    if h.strip()
]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "imserver",
    "xmpp",
    "muc",
    "pubsub",
    "stun",
    "admin_ui",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

AUTH_USER_MODEL = "xmpp.User"
ROOT_URLCONF = "imserver.urls"
ASGI_APPLICATION = "imserver.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=600)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": XMPP_DATA_DIR / "imserver.sqlite3",
            # WAL lets the web admin read while the XMPP side writes.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
            },
        }
    }

# SCRAM credentials live in User.password through this hasher, so one stored
# secret serves SASL and the web admin alike (see xmpp/passwords.py).
PASSWORD_HASHERS = [
    "xmpp.passwords.ScramPasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_TASK_ALWAYS_EAGER = False
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CELERY_BROKER_URL = "memory://"
    CELERY_TASK_ALWAYS_EAGER = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = XMPP_DATA_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("XMPP_LOG_LEVEL", "INFO")},
}

# HTTPS (admin, XEP-0156 discovery) and wss:// (RFC 7395) with the server's
# certificate on this port; 0 = off.
XMPP_HTTPS_PORT = env_int("XMPP_HTTPS_PORT", 5281)
# XEP-0156 host-meta links: the public base URL of the HTTP(S) side (e.g.
# https://chat.example.org, BOSH at <it>/http-bind/) and the public WebSocket
# URL (e.g. wss://chat.example.org/xmpp-websocket). Unset: from the request
# (the WebSocket URL from XMPP_PUBLIC_HTTP_URL when only that one is set).
XMPP_PUBLIC_HTTP_URL = os.environ.get("XMPP_PUBLIC_HTTP_URL", "").strip()
XMPP_PUBLIC_WS_URL = os.environ.get("XMPP_PUBLIC_WS_URL", "").strip()

# BOSH (XEP-0124/XEP-0206) at /http-bind/: the longest a request is held
# (the client's 'wait' is capped to it), the seconds without a request after
# which a session ends, and the origins allowed by CORS ('*' or a list).
XMPP_BOSH_MAX_WAIT = env_int("XMPP_BOSH_MAX_WAIT", 60)
XMPP_BOSH_INACTIVITY = env_int("XMPP_BOSH_INACTIVITY", 60)
XMPP_BOSH_CORS_ORIGINS = [
    o.strip() for o in os.environ.get("XMPP_BOSH_CORS_ORIGINS", "*").split(",") if o.strip()
]

# STUN (RFC 8489) and TURN (RFC 8656), stun/ app; advertised through XEP-0215.
# UDP and TCP on XMPP_STUN_PORT, TLS on XMPP_STUN_TLS_PORT (on by default only
# when a certificate is configured); 0 = off.
XMPP_STUN_PORT = env_int("XMPP_STUN_PORT", 3478)
XMPP_STUN_TLS_PORT = env_int("XMPP_STUN_TLS_PORT", 5349 if XMPP_TLS_CERT else 0)
# The public host name or IP clients are told to use (XEP-0215); default XMPP_DOMAIN.
XMPP_STUN_HOST = os.environ.get("XMPP_STUN_HOST", "").strip()
XMPP_STUN_SOFTWARE = os.environ.get("XMPP_STUN_SOFTWARE", "imserver")
XMPP_TURN_ENABLED = env_bool("XMPP_TURN_ENABLED", True)
# Shared secret of the TURN REST API credentials; made in XMPP_DATA_DIR if unset.
XMPP_TURN_SECRET = os.environ.get("XMPP_TURN_SECRET", "")
XMPP_TURN_REALM = os.environ.get("XMPP_TURN_REALM", "").strip()  # default XMPP_DOMAIN
XMPP_TURN_CREDENTIAL_TTL = env_int("XMPP_TURN_CREDENTIAL_TTL", 86400)
XMPP_TURN_MAX_LIFETIME = env_int("XMPP_TURN_MAX_LIFETIME", 3600)
XMPP_TURN_MAX_ALLOCATIONS_PER_USER = env_int("XMPP_TURN_MAX_ALLOCATIONS_PER_USER", 10)
XMPP_TURN_BANDWIDTH = env_int("XMPP_TURN_BANDWIDTH", 0)  # bytes/s per allocation, 0 = no limit
XMPP_TURN_MIN_PORT = env_int("XMPP_TURN_MIN_PORT", 49152)
XMPP_TURN_MAX_PORT = env_int("XMPP_TURN_MAX_PORT", 65535)
XMPP_TURN_RELAY_ADDRESS = os.environ.get("XMPP_TURN_RELAY_ADDRESS", "").strip()
XMPP_TURN_EXTERNAL_IP = os.environ.get("XMPP_TURN_EXTERNAL_IP", "").strip()
XMPP_TURN_ALLOW_PRIVATE_PEERS = env_bool("XMPP_TURN_ALLOW_PRIVATE_PEERS", False)
# false: runxmpp opens no STUN/TURN listener (`manage.py runstun` runs them apart).
XMPP_STUN_IN_RUNXMPP = env_bool("XMPP_STUN_IN_RUNXMPP", True)

# The web admin console, REST API and login (admin_ui/, django-allauth).
# Appended here so that admin_ui's templates (listed earlier) override allauth's.
INSTALLED_APPS += [
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served by this process, not from a CDN
]
MIDDLEWARE += ["allauth.account.middleware.AccountMiddleware"]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/console/"
# Accounts are XMPP accounts: made by an administrator (or XEP-0077), never by
# web sign-up; they log in with their username (the JID localpart).
ACCOUNT_ADAPTER = "admin_ui.login.ConsoleAccountAdapter"
ACCOUNT_LOGIN_METHODS = {"username"}
ACCOUNT_SIGNUP_FIELDS = ["username*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_PASSWORD_MIN_LENGTH = 8  # new passwords chosen on the web
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_TOLERANCE = 1  # one 30 s period either side, for phones whose clock drifts
MFA_TOTP_ISSUER = os.environ.get("XMPP_ADMIN_TOTP_ISSUER", f"imserver {XMPP_DOMAIN}")
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "admin_ui.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "admin_ui.api.errors.json_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "imserver admin API",
    "DESCRIPTION": "Users, rosters, groups, live sessions, broadcast and statistics "
    "of this XMPP server. Authenticate with 'Authorization: Token <key>'.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAdminUser"],
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}
# The console's statistics: one sample every XMPP_STATS_INTERVAL seconds, an hour kept.
XMPP_STATS_INTERVAL = env_int("XMPP_STATS_INTERVAL", 10)
# Message of the day sent to every user at login; the console can change it at run time.
XMPP_MOTD = os.environ.get("XMPP_MOTD", "")

# Multi-user chat (XEP-0045, the muc app): the service's subdomain, who may
# create rooms ("anyone" local, or "admins": staff/superusers), the default
# history length of a new room (muc#maxhistoryfetch), and how long history
# messages wait to be written together (one bulk insert per batch).
XMPP_MUC_SUBDOMAIN = os.environ.get("XMPP_MUC_SUBDOMAIN", "conference").strip().lower()
XMPP_MUC_ROOM_CREATION = os.environ.get("XMPP_MUC_ROOM_CREATION", "anyone").strip().lower()
XMPP_MUC_HISTORY_LENGTH = env_int("XMPP_MUC_HISTORY_LENGTH", 20)
XMPP_MUC_HISTORY_FLUSH_MS = env_int("XMPP_MUC_HISTORY_FLUSH_MS", 200)

# Publish-subscribe (XEP-0060) and PEP (XEP-0163), pubsub/ app.
XMPP_PUBSUB_SUBDOMAIN = os.environ.get("XMPP_PUBSUB_SUBDOMAIN", "pubsub").strip()  # "" = off
# Fan-outs up to this many subscribers are delivered inline; larger ones by Celery.
XMPP_PUBSUB_INLINE_FANOUT = env_int("XMPP_PUBSUB_INLINE_FANOUT", 100)
XMPP_PUBSUB_BATCH = env_int("XMPP_PUBSUB_BATCH", 500)  # recipients per channel-layer message
XMPP_PUBSUB_DEFAULT_MAX_ITEMS = env_int("XMPP_PUBSUB_DEFAULT_MAX_ITEMS", 10)
XMPP_PUBSUB_MAX_ITEMS = env_int("XMPP_PUBSUB_MAX_ITEMS", 1000)  # also what "max" means
XMPP_PUBSUB_MAX_PAYLOAD_SIZE = env_int("XMPP_PUBSUB_MAX_PAYLOAD_SIZE", 128 * 1024)
# How long published items wait to be written together (one upsert and one
# trim per node per batch); 0 = group commit.
XMPP_PUBSUB_ITEMS_FLUSH_MS = env_int("XMPP_PUBSUB_ITEMS_FLUSH_MS", 100)
# Celery: a task whose worker died is given again after this many seconds
# (Redis broker); pubsub fan-out tasks are acked late and idempotent.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("XMPP_CELERY_VISIBILITY_TIMEOUT", 300),
    # Look for such tasks every few seconds (kombu's default is ~100 s).
    "unacked_restore_interval": max(1, min(10, env_int("XMPP_CELERY_VISIBILITY_TIMEOUT", 300))),
    "unacked_restore_throttle": 1,
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
