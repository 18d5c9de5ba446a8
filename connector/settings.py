"""Deployment configuration: read once from CONNECTOR_* variables into a frozen object."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import structlog

from connector.senders import parse_pools
from connector.vendors import VENDORS

REPORTABLE: Final = frozenset({"sent", "delivered", "failed"})
# Vonage's 100-character callback limit less `/callbacks/vonage/status?m=` and a 33-character
# token (connector/tokens.py).
MAX_PUBLIC_URL: Final = 40

T = TypeVar("T")
log = structlog.get_logger("connector.settings")


class SettingsError(ValueError):
    """A configuration value is wrong; the message names the variable."""


class Secret(str):
    """A str that never shows its value in repr or str() formatting of containers."""

    def __repr__(self) -> str:
        return "Secret('**********')"


@dataclass(frozen=True)
class Setting:
    """One documented variable: its name, default (as text) and meaning."""

    name: str
    default: str
    meaning: str


# The single source of the configuration reference in the README (a test holds them equal).
REFERENCE: Final[tuple[Setting, ...]] = (
    Setting("PORT", "", "listen port; wins over CONNECTOR_PORT (as on Heroku)"),
    Setting("CONNECTOR_PORT", "8000", "listen port"),
    Setting("CONNECTOR_HOST", "127.0.0.1", "listen address (manifests set 0.0.0.0)"),
    Setting("CONNECTOR_DATA_DIR", "./var", "where the SQLite file and generated secrets live"),
    Setting("CONNECTOR_DATABASE_URL", "sqlite:///$CONNECTOR_DATA_DIR/connector.db",
            "`sqlite:///path`, or `postgresql://user:password@host:port/db` for several "
            "replicas and workers sharing one database"),
    Setting("CONNECTOR_SECRET_KEY", "generated into the data dir",
            "signs callback tokens and encrypts stored vendor secrets; at least 32 bytes"),
    Setting("CONNECTOR_REPORT_SECRET", "generated into the data dir (with a warning)",
            "HS256 secret of the delivery-report JWT; at least 32 bytes"),
    Setting("CONNECTOR_PLATFORM_KEY", "", "key the platform must send as the integration "
            "setting `Chan-Connector-Key` on every /sms/* and /mms/* call (401 `platform_key` "
            "otherwise); at least 32 bytes; empty = not checked (set it in production)"),
    Setting("CONNECTOR_REPORT_AUTH_PREFIX", "", "prefix of the report Authorization header, e.g. `Bearer `"),
    Setting("CONNECTOR_PUBLIC_URL", "http://{host}:{port}",
            "public base URL vendors call back; used to build and verify callback URLs; at most "
            "40 characters (Vonage caps a callback URL at 100)"),
    Setting("CONNECTOR_DEFAULT_VENDOR", "twilio", "vendor used when Chan-Vendor is absent"),
    Setting("CONNECTOR_ADMIN_KEY", "", "Auth-Key for operator endpoints; empty = they answer 401"),
    Setting("CONNECTOR_ALLOW_PRIVATE_NETWORKS", "false",
            "allow callback URLs and vendor Base-Urls on loopback/private addresses"),
    Setting("CONNECTOR_ALLOW_HTTP", "false", "allow plain-http callback URLs (tests, demo)"),
    Setting("CONNECTOR_CALLBACK_HOSTS", "", "comma list of allowed callback_url hosts "
            "(`*.example.com` matches subdomains); empty = any public host"),
    Setting("CONNECTOR_VENDOR_HOSTS", "", "comma list of hosts allowed as a vendor Base-Url, "
            "beside each vendor's documented host; empty = documented hosts only"),
    Setting("CONNECTOR_CALLBACK_BASIC_AUTH", "", "`user:password` every vendor callback must "
            "present as HTTP Basic auth (for vendors configured to send it); empty = not checked"),
    Setting("CONNECTOR_REPORT_STATUSES", "delivered,failed",
            "which statuses produce delivery reports (`sent` adds intermediate reports)"),
    Setting("CONNECTOR_ALLOWED_REGIONS", "", "comma list of destination regions (ISO codes "
            "like GB, or calling codes like 44); empty = all; others get 422 "
            "region_not_permitted"),
    Setting("CONNECTOR_REFUSE_LANDLINES", "false",
            "refuse recipients that are certainly fixed-line (422 landline)"),
    Setting("CONNECTOR_ALPHA_SENDER_BLOCKED_REGIONS", "US,CA", "regions where alphanumeric "
            "senders are refused (422 sender_not_allowed); `none` for no such rule"),
    Setting("CONNECTOR_SENDER_POOLS", "", "named pools of sender numbers, e.g. "
            "`marketing=+12125550100,+13105550100;alerts=+14155550100`; a `sender` equal to a "
            "pool name is sent from the pool's number for that recipient (sticky, same area "
            "code or country first). Names are 1-11 letters, digits or spaces with a letter"),
    Setting("CONNECTOR_RATE_LIMITS", "", "sends per second per vendor account, e.g. "
            "`twilio=30,twilio:AC123=5,sinch=50` (the account is its id setting: Account SID, "
            "workspace, service plan, base URL or API key); empty = unlimited. Counted across all "
            "replicas on PostgreSQL or Redis (`CONNECTOR_REDIS_URL`), per process on SQLite"),
    Setting("CONNECTOR_RATE_UNIT", "messages", "`messages` or `segments`: what a rate counts"),
    Setting("CONNECTOR_REDIS_URL", "", "`redis://[:password@]host:port/db`: keep the rate-limit "
            "buckets and vendor pauses in Redis instead of the PostgreSQL store; empty = the "
            "store (PostgreSQL), or per process (SQLite)"),
    Setting("CONNECTOR_SIGNATURE_WINDOW", "300", "seconds a signed Bird, Sinch or Vonage "
            "callback's timestamp may differ from the connector's clock (none of them "
            "documents a window)"),
    Setting("CONNECTOR_KEEP_MESSAGE_TEXT", "false", "store each message's text, shown by the "
            "operator look-up; off: the text is sent and forgotten. On PostgreSQL the text "
            "commits with `synchronous_commit = off`: a crash of the database host may lose the "
            "last ~0.6 s of kept texts (never a claim, outcome or status), a server crash alone "
            "nothing"),
    Setting("CONNECTOR_SUPPRESS_OPT_OUTS", "true", "remember recipients a vendor reports as "
            "opted out (per vendor account), in its send answer or a later status callback, "
            "and refuse later sends to them with 422 `opted_out` before any vendor call; "
            "operators list and remove entries at /api/v1/suppressions"),
    Setting("CONNECTOR_INBOUND_URL", "", "the platform's inbound endpoint: messages recipients "
            "send to the deployment's numbers (`POST /callbacks/{vendor}/inbound`) are forwarded "
            "there through the outbox; empty = inbound callbacks answer 404 and nothing is kept"),
    Setting("CONNECTOR_INBOUND_SECRET", "CONNECTOR_REPORT_SECRET", "HS256 secret of the "
            "inbound forwards' JWT; at least 32 bytes when set"),
    Setting("CONNECTOR_OPT_OUT_KEYWORDS", "", "comma list of words that, sent alone, put the "
            "sender on the vendor account's suppression list, beside STOP, STOPALL, UNSUBSCRIBE, "
            "CANCEL, END and QUIT"),
    Setting("CONNECTOR_OPT_IN_KEYWORDS", "", "comma list of words that, sent alone, take the "
            "sender off it again, beside START and UNSTOP"),
    Setting("CONNECTOR_MAX_BODY_BYTES", "65536", "largest accepted /sms/send body (413 above)"),
    Setting("CONNECTOR_DEDUPE_RETENTION", "604800", "seconds a request_id outcome is kept"),
    Setting("CONNECTOR_INFLIGHT_WAIT", "10", "seconds a repeat waits for an in-flight original"),
    Setting("CONNECTOR_VENDOR_TIMEOUT", "10", "seconds for one vendor call"),
    Setting("CONNECTOR_VALIDITY", "", "seconds a message stays deliverable; after that the "
            "vendor drops it and the report is `failed` with code `expired`. Clamped per "
            "vendor: Twilio 1-36000, Sinch up to 3 days, Infobip up to 48 h, Vonage 20 s to "
            "7 days; Bird's send has no such field. Empty = each vendor's default"),
    Setting("CONNECTOR_AMBIGUOUS_POLICY", "at_most_once",
            "`at_most_once` or `at_least_once`: what an unresolvable vendor outcome does"),
    Setting("CONNECTOR_AMBIGUOUS_AFTER", "3600", "seconds after which an ambiguous send with no "
            "vendor callback is reported `failed` with code `ambiguous`"),
    Setting("CONNECTOR_REPORT_BATCH", "100", "most events in one report POST"),
    Setting("CONNECTOR_REPORT_LINGER", "0.25", "seconds the dispatcher waits to fill a batch"),
    Setting("CONNECTOR_REPORT_HORIZON", "86400", "seconds a report is retried before dead-letter"),
    Setting("CONNECTOR_REPORT_TIMEOUT", "10", "seconds for one report POST"),
    Setting("CONNECTOR_REPORT_BACKOFF", "1", "first retry delay in seconds (doubles, with jitter)"),
    Setting("CONNECTOR_REPORT_MAX_BACKOFF", "600", "largest retry delay in seconds"),
    Setting("CONNECTOR_DISPATCHER", "true", "run the report dispatcher inside `connector serve`"),
    Setting("CONNECTOR_SQLITE_SYNCHRONOUS", "NORMAL",
            "SQLite `synchronous` pragma: NORMAL survives process crashes, FULL also power loss"),
    Setting("CONNECTOR_DB_POOL_MIN", "2", "PostgreSQL connections each process keeps open"),
    Setting("CONNECTOR_DB_POOL_MAX", "10", "most PostgreSQL connections each process opens"),
    Setting("CONNECTOR_LOG_LEVEL", "info", "debug, info, warning or error"),
    Setting("CONNECTOR_LOG_FORMAT", "auto", "`json`, `console`, or `auto` (console on a TTY)"),
)
DEFAULTS: Final = {s.name: s.default for s in REFERENCE}


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment, validated."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./var")
    database_url: str = ""
    secret_key: Secret = field(default=Secret(""), repr=False)
    report_secret: Secret = field(default=Secret(""), repr=False)
    report_auth_prefix: str = ""
    public_url: str = ""
    default_vendor: str = "twilio"
    admin_key: Secret = field(default=Secret(""), repr=False)
    platform_key: Secret = field(default=Secret(""), repr=False)
    callback_basic_auth: Secret = field(default=Secret(""), repr=False)
    allow_private_networks: bool = False
    allow_http: bool = False
    callback_hosts: tuple[str, ...] = ()
    vendor_hosts: tuple[str, ...] = ()
    report_statuses: frozenset[str] = frozenset({"delivered", "failed"})
    allowed_regions: tuple[str, ...] = ()
    rate_limits: dict[str, float] = field(default_factory=dict)
    rate_unit: str = "messages"
    redis_url: str = ""
    suppress_opt_outs: bool = True
    inbound_url: str = ""
    inbound_secret: Secret = field(default=Secret(""), repr=False)
    opt_out_keywords: tuple[str, ...] = ()
    opt_in_keywords: tuple[str, ...] = ()
    keep_message_text: bool = False
    signature_window: float = 300.0
    refuse_landlines: bool = False
    alpha_sender_blocked_regions: tuple[str, ...] = ("US", "CA")
    sender_pools: dict[str, tuple[str, ...]] = field(default_factory=dict)
    max_body_bytes: int = 65536
    dedupe_retention: float = 7 * 86400.0
    inflight_wait: float = 10.0
    vendor_timeout: float = 10.0
    validity: int | None = None  # seconds; adapters clamp it to their vendor's documented range
    ambiguous_policy: Literal["at_most_once", "at_least_once"] = "at_most_once"
    ambiguous_after: float = 3600.0
    report_batch: int = 100
    report_linger: float = 0.25
    report_horizon: float = 86400.0
    report_timeout: float = 10.0
    report_backoff: float = 1.0
    report_max_backoff: float = 600.0
    dispatcher: bool = True
    sqlite_synchronous: str = "NORMAL"
    db_pool_min: int = 2
    db_pool_max: int = 10
    log_level: str = "info"
    log_format: str = "auto"

    def __repr__(self) -> str:
        # A postgresql:// or redis:// URL may carry a password.
        shown = ", ".join(
            f"{f.name}={'***' if f.name in _SECRET_FIELDS else repr(getattr(self, f.name))}"
            if f.name not in _URL_FIELDS else f"{f.name}={_mask(getattr(self, f.name))!r}"
            for f in dataclasses.fields(self)
        )
        return f"Settings({shown})"

    @property
    def sqlite_path(self) -> Path:
        return Path(self.database_url.removeprefix("sqlite:///"))

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check every variable once; a wrong one raises SettingsError naming it."""
        env = os.environ if env is None else env
        r = _Reader(env)
        data_dir = Path(r.text("CONNECTOR_DATA_DIR"))
        port = r.parse("PORT", _port) if env.get("PORT") else r.parse("CONNECTOR_PORT", _port)
        host = r.text("CONNECTOR_HOST")
        database_url = env.get("CONNECTOR_DATABASE_URL") or f"sqlite:///{data_dir / 'connector.db'}"
        if not database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise SettingsError("CONNECTOR_DATABASE_URL: use sqlite:///path or "
                                "postgresql://user:password@host:port/database")
        redis_url = r.text("CONNECTOR_REDIS_URL")
        if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            # The value is not echoed: it may hold a password.
            raise SettingsError("CONNECTOR_REDIS_URL: use redis://[:password@]host:port/db, "
                                "rediss://... or unix://...")
        pool_min = r.parse("CONNECTOR_DB_POOL_MIN", _non_negative_int)
        pool_max = r.parse("CONNECTOR_DB_POOL_MAX", _positive_int)
        if pool_min > pool_max:
            raise SettingsError(f"CONNECTOR_DB_POOL_MIN: {pool_min} is above "
                                f"CONNECTOR_DB_POOL_MAX ({pool_max})")
        default_vendor = r.text("CONNECTOR_DEFAULT_VENDOR").lower()
        if default_vendor not in VENDORS:
            raise SettingsError(f"CONNECTOR_DEFAULT_VENDOR: {default_vendor!r} is not one of "
                                f"{', '.join(VENDORS)}")
        statuses = frozenset(r.csv("CONNECTOR_REPORT_STATUSES"))
        if not statuses or not statuses <= REPORTABLE:
            raise SettingsError("CONNECTOR_REPORT_STATUSES: use a comma list of "
                                f"{', '.join(sorted(REPORTABLE))}")
        policy = r.text("CONNECTOR_AMBIGUOUS_POLICY")
        if policy not in ("at_most_once", "at_least_once"):
            raise SettingsError("CONNECTOR_AMBIGUOUS_POLICY: use at_most_once or at_least_once")
        sync = r.text("CONNECTOR_SQLITE_SYNCHRONOUS").upper()
        if sync not in ("NORMAL", "FULL", "EXTRA"):
            raise SettingsError("CONNECTOR_SQLITE_SYNCHRONOUS: use NORMAL, FULL or EXTRA")
        public_url = (env.get("CONNECTOR_PUBLIC_URL") or f"http://{host}:{port}").rstrip("/")
        if not public_url.startswith(("http://", "https://")):
            raise SettingsError("CONNECTOR_PUBLIC_URL: must start with http:// or https://")
        if len(public_url) > MAX_PUBLIC_URL:
            # Refused whatever vendors are in use: the platform picks the vendor per request,
            # so a deployment cannot promise at start-up that Vonage will never be asked.
            raise SettingsError(
                f"CONNECTOR_PUBLIC_URL: {len(public_url)} characters; at most {MAX_PUBLIC_URL} "
                "(Vonage refuses callback URLs over 100 characters)")
        return cls(
            host=host,
            port=port,
            data_dir=data_dir,
            database_url=database_url,
            secret_key=r.secret("CONNECTOR_SECRET_KEY"),
            report_secret=r.secret("CONNECTOR_REPORT_SECRET"),
            platform_key=r.secret("CONNECTOR_PLATFORM_KEY"),
            report_auth_prefix=env.get("CONNECTOR_REPORT_AUTH_PREFIX", ""),
            public_url=public_url,
            default_vendor=default_vendor,
            admin_key=Secret(env.get("CONNECTOR_ADMIN_KEY") or ""),
            callback_basic_auth=Secret(r.parse("CONNECTOR_CALLBACK_BASIC_AUTH", _user_password)),
            allow_private_networks=r.parse("CONNECTOR_ALLOW_PRIVATE_NETWORKS", _bool),
            allow_http=r.parse("CONNECTOR_ALLOW_HTTP", _bool),
            callback_hosts=tuple(h.lower() for h in r.csv("CONNECTOR_CALLBACK_HOSTS")),
            vendor_hosts=tuple(h.lower() for h in r.csv("CONNECTOR_VENDOR_HOSTS")),
            report_statuses=statuses,
            allowed_regions=r.parse("CONNECTOR_ALLOWED_REGIONS", _regions),
            rate_limits=r.parse("CONNECTOR_RATE_LIMITS", _rates),
            rate_unit=r.choice("CONNECTOR_RATE_UNIT", ("messages", "segments")),
            redis_url=redis_url,
            suppress_opt_outs=r.parse("CONNECTOR_SUPPRESS_OPT_OUTS", _bool),
            inbound_url=r.parse("CONNECTOR_INBOUND_URL", _http_url),
            inbound_secret=r.secret("CONNECTOR_INBOUND_SECRET"),
            opt_out_keywords=r.parse("CONNECTOR_OPT_OUT_KEYWORDS", _keywords),
            opt_in_keywords=r.parse("CONNECTOR_OPT_IN_KEYWORDS", _keywords),
            keep_message_text=r.parse("CONNECTOR_KEEP_MESSAGE_TEXT", _bool),
            signature_window=r.parse("CONNECTOR_SIGNATURE_WINDOW", _positive_float),
            refuse_landlines=r.parse("CONNECTOR_REFUSE_LANDLINES", _bool),
            alpha_sender_blocked_regions=r.parse("CONNECTOR_ALPHA_SENDER_BLOCKED_REGIONS",
                                                 _regions),
            sender_pools=r.parse("CONNECTOR_SENDER_POOLS", parse_pools),
            max_body_bytes=r.parse("CONNECTOR_MAX_BODY_BYTES", _positive_int),
            dedupe_retention=r.parse("CONNECTOR_DEDUPE_RETENTION", _positive_float),
            inflight_wait=r.parse("CONNECTOR_INFLIGHT_WAIT", _positive_float),
            vendor_timeout=r.parse("CONNECTOR_VENDOR_TIMEOUT", _positive_float),
            validity=r.parse("CONNECTOR_VALIDITY", _optional_positive_int),
            ambiguous_policy=policy,  # type: ignore[arg-type]
            ambiguous_after=r.parse("CONNECTOR_AMBIGUOUS_AFTER", _positive_float),
            report_batch=r.parse("CONNECTOR_REPORT_BATCH", _positive_int),
            report_linger=r.parse("CONNECTOR_REPORT_LINGER", _non_negative_float),
            report_horizon=r.parse("CONNECTOR_REPORT_HORIZON", _positive_float),
            report_timeout=r.parse("CONNECTOR_REPORT_TIMEOUT", _positive_float),
            report_backoff=r.parse("CONNECTOR_REPORT_BACKOFF", _positive_float),
            report_max_backoff=r.parse("CONNECTOR_REPORT_MAX_BACKOFF", _positive_float),
            dispatcher=r.parse("CONNECTOR_DISPATCHER", _bool),
            sqlite_synchronous=sync,
            db_pool_min=pool_min,
            db_pool_max=pool_max,
            log_level=r.choice("CONNECTOR_LOG_LEVEL", ("debug", "info", "warning", "error")),
            log_format=r.choice("CONNECTOR_LOG_FORMAT", ("auto", "json", "console")),
        )

    def with_generated_secrets(self) -> Settings:
        """Fill unset secrets from files in the data dir, creating them once (0600)."""
        secret_key = self.secret_key or _load_or_create(self.data_dir / "secret_key")
        report_secret = self.report_secret
        if not report_secret:
            report_secret = _load_or_create(self.data_dir / "report_secret")
            log.warning("report_secret_generated",
                        detail="CONNECTOR_REPORT_SECRET is unset; using the secret generated in "
                               "the data dir. Give the platform this secret or set the variable.")
        return self.replace(secret_key=secret_key, report_secret=report_secret)


_SECRET_FIELDS: Final = frozenset({"secret_key", "report_secret", "admin_key",
                                   "platform_key", "callback_basic_auth",
                                   "inbound_secret"})
MIN_SECRET_BYTES: Final = 32
_URL_FIELDS: Final = frozenset({"database_url", "redis_url"})


def _mask(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^/]*@", r"\1***@", url)


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str) -> str:
        value = self.env.get(name)
        return DEFAULTS[name] if value is None or value == "" else value.strip()

    def parse(self, name: str, convert: Callable[[str], T]) -> T:
        raw = self.text(name)
        try:
            return convert(raw)
        except ValueError as exc:
            raise SettingsError(f"{name}: {exc} (got {raw!r})") from None

    def secret(self, name: str) -> Secret:
        """A key or HMAC secret: unset (generated, or the check it enables is off) or at least
        MIN_SECRET_BYTES long. The value is never echoed."""
        value = self.env.get(name) or ""
        if value and len(value.encode()) < MIN_SECRET_BYTES:
            raise SettingsError(f"{name}: too short ({len(value.encode())} bytes); use at least "
                                f"{MIN_SECRET_BYTES} random bytes, e.g. `openssl rand -base64 32`")
        return Secret(value)

    def csv(self, name: str) -> list[str]:
        return [part.strip() for part in self.text(name).split(",") if part.strip()]

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name).lower()
        if value not in allowed:
            raise SettingsError(f"{name}: use one of {', '.join(allowed)} (got {value!r})")
        return value


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _rates(raw: str) -> dict[str, float]:
    """`vendor=rate` or `vendor:account=rate`, comma separated; rates per second, > 0."""
    rates: dict[str, float] = {}
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        key, sep, value = part.rpartition("=")
        vendor = key.split(":", 1)[0].lower()
        if not sep or vendor not in VENDORS:
            raise ValueError(f"{part!r} is not vendor=rate or vendor:account=rate")
        rate = float(value)
        if not rate > 0:
            raise ValueError(f"{part!r}: a rate must be above 0")
        rates[vendor + key[len(vendor):]] = rate
    return rates


def _regions(raw: str) -> tuple[str, ...]:
    """ISO 3166 alpha-2 codes (upper-cased) or country calling codes (digits)."""
    out: list[str] = []
    if raw.lower() == "none":
        return ()
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        part = part.removeprefix("+").upper()
        if not (part.isdigit() and 1 <= len(part) <= 3) and not (
                len(part) == 2 and part.isalpha()):
            raise ValueError(f"{part!r} is neither an ISO region code nor a calling code")
        out.append(part)
    return tuple(out)


def _user_password(raw: str) -> str:
    if raw and ":" not in raw:
        raise ValueError("expected user:password")
    return raw


def _http_url(raw: str) -> str:
    if raw and not raw.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return raw


def _keywords(raw: str) -> tuple[str, ...]:
    words = tuple(part.strip().casefold() for part in raw.split(",") if part.strip())
    if any(len(word.split()) != 1 for word in words):
        raise ValueError("each keyword must be one word")
    return words


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("expected a port number 0-65535")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("expected a positive whole number")
    return value


def _optional_positive_int(raw: str) -> int | None:
    return _positive_int(raw) if raw else None


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("expected a whole number >= 0")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("expected a positive number")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("expected a number >= 0")
    return value


def _load_or_create(path: Path) -> Secret:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return Secret(path.read_text().strip())
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(32)
    # Write aside, then hard-link into place: when several processes start at once exactly one
    # link wins and every process reads that complete file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return Secret(path.read_text().strip())


def reference_table() -> str:
    """The README's configuration table, generated from REFERENCE (a test keeps them equal)."""
    rows = [f"| `{s.name}` | {s.default or '(unset)'} | {s.meaning} |" for s in REFERENCE]
    return "\n".join(["| variable | default | meaning |", "|---|---|---|", *rows])
