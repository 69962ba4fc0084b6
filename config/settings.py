"""Typed settings: shipped defaults, then a user TOML file, then ACTORBOT_* environment."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from config.models import (
    HttpUrlText,
    ImagePresetSettings,
    PortraitSettings,
    PresetSettings,
    ProviderSettings,
    ProvidersSettings,
)

DEFAULTS_FILE = Path(__file__).with_name("defaults.toml")
USER_FILE_ENV = "ACTORBOT_CONFIG"
USER_FILE_DEFAULT = Path("actorbot.toml")
# Telegram's rule for setWebhook's secret_token.
_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
# The web page's login: long enough that guessing it over the network is hopeless.
_WEB_TOKEN_MIN = 16


def _store_url(value: SecretStr) -> SecretStr:
    """Accept an empty URL (SQLite) or a PostgreSQL one; the message never shows the value."""
    url = value.get_secret_value()
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres") or not parts.netloc:
            raise ValueError(
                "must be empty (SQLite under data_dir) or a postgresql:// URL with a host"
            )
    return value


class StoreSettings(BaseModel):
    """Where the database lives: a SQLite file (the default) or a PostgreSQL server."""

    path: str = ""  # SQLite file; empty: <data_dir>/actorbot.sqlite3
    # postgresql://user:password@host:port/db selects PostgreSQL; a secret (the password).
    url: Annotated[SecretStr, AfterValidator(_store_url)] = SecretStr("")

    @property
    def engine(self) -> Literal["sqlite", "postgresql"]:
        """Return which engine the settings select."""
        return "postgresql" if self.url.get_secret_value() else "sqlite"

    @property
    def secrets(self) -> list[str]:
        """Return what no log may show: the URL and its password, as written and decoded."""
        url = self.url.get_secret_value()
        password = urlsplit(url).password if url else None
        return [url, password, unquote(password)] if password else [url] if url else []


class ImageSettings(BaseModel):
    """Limits and geometry for the photo a request brings."""

    max_bytes: int = Field(20_000_000, gt=0)
    max_pixels: int = Field(60_000_000, gt=0)
    min_side: int = Field(64, gt=0)
    width: int = Field(1280, ge=16)
    height: int = Field(720, ge=16)
    fit: Literal["crop", "pad"] = "crop"
    crop_bias: float = Field(0.3, ge=0.0, le=1.0)
    jpeg_quality: int = Field(90, ge=30, le=100)
    background: str = "#000000"


class PromptSettings(BaseModel):
    """How lines are measured against clip lengths."""

    max_chars: int = Field(400, gt=0)
    zh_chars_per_second: float = Field(4.5, gt=0)
    en_words_per_second: float = Field(2.7, gt=0)
    short_clip_max_seconds: float = Field(1.2, gt=0)
    long_clip_max_seconds: float = Field(8.5, gt=0)
    max_takes: int = Field(5, ge=1, le=10)


class CharacterSettings(BaseModel):
    """Saved characters: how many an account may keep, and what a voice sample must be."""

    model_config = ConfigDict(extra="forbid")

    max_per_account: int = Field(20, ge=1)
    max_voice_bytes: int = Field(10_000_000, gt=0)  # bigger samples are refused before decoding
    min_voice_seconds: float = Field(5.0, gt=0)  # Kling's voice creation takes 5-30 s
    max_voice_seconds: float = Field(30.0, gt=0)
    voice_silent_below_dbfs: float = Field(-45.0, le=0)  # whole-sample RMS under this: silent


class WorkerSettings(BaseModel):
    """Leases, retries and deadlines of the job worker."""

    lease_seconds: float = Field(30, gt=0)
    heartbeat_seconds: float = Field(10, gt=0)
    # Provider jobs per take: a job the provider failed (retryable) is tried again up to
    # this; a submit or poll that cannot reach the provider is retried until the deadline.
    max_attempts: int = Field(3, ge=1)
    backoff_base_seconds: float = Field(2.0, ge=0)
    backoff_max_seconds: float = Field(60.0, ge=0)
    job_deadline_seconds: float = Field(900, gt=0)
    status_interval_seconds: float = Field(3.0, gt=0)
    max_result_bytes: int = Field(200_000_000, gt=0)
    finish_concurrency: int = Field(4, ge=1)


class RetentionSettings(BaseModel):
    """How long what finished jobs leave behind is kept; the worker deletes it after."""

    enabled: bool = True
    results_days: float = Field(7, gt=0)  # results and work files, after the job finished
    history_days: float = Field(7, gt=0)  # request photos, after the request's last take ended
    sweep_interval_seconds: float = Field(3600, gt=0)


class PreviewSettings(BaseModel):
    """The offline preview renderer."""

    slots: int = Field(1, ge=1)
    fps: int = Field(24, ge=1, le=60)
    font_path: str = ""
    video_bitrate: int = Field(2_500_000, gt=0)


class JobApiSettings(BaseModel):
    """A model server speaking the actorbot job API (docs/jobapi.md)."""

    url: HttpUrlText = ""
    token: SecretStr = SecretStr("")
    slots: int = Field(4, ge=1)
    poll_interval_seconds: float = Field(2.0, gt=0)
    request_timeout_seconds: float = Field(30.0, gt=0)


class TakeCheckSettings(BaseModel):
    """When a finished take counts as failed (checked before delivery)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True  # off: no preset's takes are checked (each preset has take_check)
    silent_below_dbfs: float = Field(-50.0, le=0)  # whole-track RMS under this: silent
    max_duration_error: float = Field(0.35, gt=0)  # |made - asked| / asked over this: cut
    frozen_below: float = Field(1.5, ge=0)  # mean pixel change (0-255) under this: frozen
    samples_per_second: float = Field(4.0, gt=0)  # frames compared per second of video


BUILTIN_BACKENDS = ("preview", "jobapi")


class TelegramSettings(BaseModel):
    """The Telegram bot: token from @BotFather, optional self-hosted Bot API server."""

    token: SecretStr = SecretStr("")
    base_url: HttpUrlText = ""  # e.g. http://127.0.0.1:8081/bot for a self-hosted Bot API server
    base_file_url: HttpUrlText = ""
    local_mode: bool = False  # self-hosted server in --local mode: 2000 MB uploads
    admin_ids: list[int] = []
    max_upload_bytes: int = Field(0, ge=0)  # 0: 50 MB, or 2000 MB in local mode
    max_download_bytes: int = Field(20_000_000, gt=0)  # getFile limit of the public Bot API
    poll_timeout_seconds: int = Field(30, ge=0)
    webhook_url: HttpUrlText = ""  # public HTTPS URL; empty: long polling
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(8443, gt=0, lt=65536)
    webhook_secret: SecretStr = SecretStr("")
    group_edit_interval_seconds: float = Field(3.0, ge=0)  # status edits per group chat
    private_edit_interval_seconds: float = Field(1.0, ge=0)
    group_trigger: Literal["addressed", "all"] = "addressed"  # "all" needs privacy mode off
    photo_memory_seconds: float = Field(6 * 3600, gt=0)  # a line may follow its photo
    history_size: int = Field(5, ge=1, le=10)
    rate_limit_retries: int = Field(3, ge=0)  # retries after a 429 (RetryAfter)
    overall_max_rate: float = Field(30, ge=0)  # messages per second, whole bot; 0: off
    group_max_rate: float = Field(20, ge=0)  # messages per minute per group; 0: off


class DiscordSettings(BaseModel):
    """The Discord bot: token and application from the Developer Portal."""

    token: SecretStr = SecretStr("")
    application_id: int = Field(0, ge=0)  # 0: read from the token's application at login
    admin_ids: list[int] = []  # Discord user ids that may press anyone's buttons, /grant, ...
    admin_role: str = ""  # members with a role of this name (or id) count as admins too
    guild_ids: list[int] = []  # sync commands to these guilds at once; empty: global sync
    edit_interval_seconds: float = Field(1.0, ge=0)  # status edits per channel
    upload_limit_bytes: int = Field(10 * 1024 * 1024, gt=0)  # when Discord names none
    photo_memory_seconds: float = Field(6 * 3600, gt=0)  # "New line" reuses the photo
    history_size: int = Field(5, ge=1, le=10)


class WebhookSettings(BaseModel):
    """Provider callbacks (Replicate, fal): they only wake a job, polling stays the truth."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    listen: str = "127.0.0.1"
    port: int = Field(8090, ge=0, lt=65536)  # 0: any free port (tests)
    # Where providers reach the receiver, e.g. https://bot.example.com/hooks: Replicate
    # calls {public_url}/replicate and fal {public_url}/fal.
    public_url: HttpUrlText = ""
    replicate_secret: SecretStr = SecretStr("")  # whsec_... from GET /v1/webhooks/default/secret
    fal_public_keys: list[str] = []  # base64url Ed25519 keys ("x" of fal's JWKS)


class MetricsSettings(BaseModel):
    """The operator's HTTP port: Prometheus metrics, liveness and readiness."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    listen: str = "127.0.0.1"
    port: int = Field(9464, ge=0, lt=65536)  # 0: any free port (tests)


class WebSettings(BaseModel):
    """The operator's web page and playground (bots/web): off unless enabled, token login."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    listen: str = "127.0.0.1"
    port: int = Field(8080, ge=0, lt=65536)  # 0: any free port (tests)
    token: SecretStr = SecretStr("")  # the login; a secret: better ACTORBOT_WEB__TOKEN
    session_minutes: float = Field(720, gt=0)  # a login lasts this long
    usage_days: int = Field(14, ge=1, le=366)  # days the usage charts cover


class RoleSettings(BaseModel):
    """Per-role overrides of the quota defaults; unset fields use the [quotas] values."""

    model_config = ConfigDict(extra="forbid")

    credits: int | None = Field(None, ge=0)
    weight: int = Field(1, ge=1, le=10)  # takes started per turn of the round-robin
    max_in_flight: int | None = Field(None, ge=1)
    max_queued: int | None = Field(None, ge=1)


class QuotaSettings(BaseModel):
    """Credits, caps, access mode and flood protection, shared by every adapter."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True  # off: no credits, caps, access checks or flood guard
    credits: int = Field(20, ge=0)  # per user per period
    period: Literal["day", "week", "month"] = "day"
    timezone: str = "UTC"  # when a period (and a chat's day) starts
    take_costs: dict[int, int] = {5: 1, 10: 2}  # clip seconds -> credits per take
    portrait_cost: int = Field(2, ge=0)  # credits to draw candidates for a new character
    max_in_flight_per_user: int = Field(2, ge=1)  # takes a user has at the backend at once
    max_queued_per_user: int = Field(5, ge=1)  # takes a user has waiting
    max_takes_per_chat_per_day: int = Field(200, ge=0)  # 0: no cap
    max_queue: int = Field(500, ge=1)  # waiting takes in total before "busy, try later"
    access: Literal["open", "allowlist", "approval"] = "open"
    exempt_platforms: list[str] = ["cli"]  # local operator tools: no access, credit or flood checks
    flood_burst: int = Field(5, ge=1)  # requests a user may send at once
    flood_refill_seconds: float = Field(6.0, gt=0)  # then one more per this many seconds
    link_code_minutes: float = Field(10.0, gt=0)
    roles: dict[str, RoleSettings] = {}

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("take_costs")
    @classmethod
    def _positive_costs(cls, value: dict[int, int]) -> dict[int, int]:
        if any(seconds <= 0 or cost < 0 for seconds, cost in value.items()):
            raise ValueError("take_costs maps clip seconds > 0 to credits >= 0")
        return value


class DebugSettings(BaseModel):
    """Switches for crash tests; never set in production."""

    failpoints: list[str] = []


class Settings(BaseSettings):
    """Everything the composition root needs, validated once at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="ACTORBOT_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = Path("data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    # "preview", "jobapi", a preset name, or a list of preset names (fallback order).
    backend: str | list[str] = "preview"
    locale: Literal["en", "zh"] = "en"
    store: StoreSettings = StoreSettings()
    images: ImageSettings = ImageSettings()
    prompts: PromptSettings = PromptSettings()
    characters: CharacterSettings = CharacterSettings()
    worker: WorkerSettings = WorkerSettings()
    retention: RetentionSettings = RetentionSettings()
    preview: PreviewSettings = PreviewSettings()
    jobapi: JobApiSettings = JobApiSettings()
    providers: ProvidersSettings = ProvidersSettings()
    presets: dict[str, PresetSettings] = {}
    image_presets: dict[str, ImagePresetSettings] = {}
    portraits: PortraitSettings = PortraitSettings()
    takecheck: TakeCheckSettings = TakeCheckSettings()
    webhooks: WebhookSettings = WebhookSettings()
    web: WebSettings = WebSettings()
    metrics: MetricsSettings = MetricsSettings()
    telegram: TelegramSettings = TelegramSettings()
    discord: DiscordSettings = DiscordSettings()
    quotas: QuotaSettings = QuotaSettings()
    debug: DebugSettings = DebugSettings()

    @model_validator(mode="after")
    def _features_have_their_settings(self) -> Self:
        """Refuse at start-up a configured feature that lacks a setting it needs."""
        problems = []
        if self.store.engine == "postgresql" and self.store.path:
            problems.append("store.path: SQLite only; leave it empty when store.url is set")
        if self.backend == "jobapi" and not self.jobapi.url:
            problems.append('jobapi.url: required when backend = "jobapi"')
        telegram = self.telegram
        if telegram.webhook_url:
            secret = telegram.webhook_secret.get_secret_value()
            if not secret:
                problems.append(
                    "telegram.webhook_secret: required in webhook mode"
                    " (telegram.webhook_url is set)"
                )
            elif not _WEBHOOK_SECRET.fullmatch(secret):
                problems.append(
                    "telegram.webhook_secret: 1 to 256 of the characters A-Z a-z 0-9 _ -"
                    " (Telegram's rule)"
                )
        if self.webhooks.enabled and not self.webhooks.public_url:
            problems.append("webhooks.public_url: required when webhooks.enabled is true")
        web_token = self.web.token.get_secret_value()
        if self.web.enabled and not web_token:
            problems.append(
                "web.token: required when web.enabled is true (set ACTORBOT_WEB__TOKEN)"
            )
        elif self.web.enabled and len(web_token) < _WEB_TOKEN_MIN:
            problems.append(
                f"web.token: at least {_WEB_TOKEN_MIN} characters (e.g. openssl rand -hex 16)"
            )
        if telegram.local_mode and not telegram.base_url:
            problems.append(
                "telegram.base_url: required with telegram.local_mode (a self-hosted Bot API"
                " server)"
            )
        image_preset = self.portraits.image_preset
        if image_preset and image_preset not in self.image_presets:
            known = ", ".join(sorted(self.image_presets)) or "none"
            problems.append(
                f"portraits.image_preset: unknown image preset {image_preset} (known: {known})"
            )
        if problems:
            # The text is ours and names keys only, never a value (secrets among them).
            raise PydanticCustomError(
                "missing_setting", "{problems}", {"problems": "; ".join(problems)}
            )
        return self

    @property
    def backend_chain(self) -> list[str]:
        """Return the configured backend as a list: one builtin, or presets in fallback order."""
        return [self.backend] if isinstance(self.backend, str) else list(self.backend)

    @model_validator(mode="after")
    def _backend_is_usable(self) -> Self:
        # One line per problem, naming the key to set: checked once, at start-up.
        chain = self.backend_chain
        if not chain:
            raise PydanticCustomError("backend", "backend: an empty list names no preset")
        if len(set(chain)) != len(chain):
            raise PydanticCustomError("backend", "backend: a preset is listed twice")
        if len(chain) > 1 and any(name in BUILTIN_BACKENDS for name in chain):
            raise PydanticCustomError("backend", "backend: a fallback list holds presets only")
        for name in chain:
            if name in BUILTIN_BACKENDS:
                continue
            preset = self.presets.get(name)
            if preset is None:
                known = ", ".join([*BUILTIN_BACKENDS, *sorted(self.presets)])
                raise PydanticCustomError(
                    "backend", "backend: unknown preset {name} (known: {known})",
                    {"name": name, "known": known},
                )  # fmt: skip
            speech = preset.speech
            if speech is not None and speech.max_seconds < self.prompts.long_clip_max_seconds:
                # A line the prompts admit could be refused by the video model after the
                # speech was paid for: refuse the configuration instead.
                raise PydanticCustomError(
                    "backend",
                    "preset {name}: speech.max_seconds ({limit}) is under"
                    " prompts.long_clip_max_seconds ({longest})",
                    {
                        "name": name,
                        "limit": speech.max_seconds,
                        "longest": self.prompts.long_clip_max_seconds,
                    },
                )
            provider: ProviderSettings = getattr(self.providers, preset.provider)
            if not provider.key.get_secret_value():
                field = "token" if preset.provider == "replicate" else "key"
                raise PydanticCustomError(
                    "backend",
                    "preset {name} needs providers.{provider}.{field} "
                    "(ACTORBOT_PROVIDERS__{upper}__{field_upper})",
                    {
                        "name": name,
                        "provider": preset.provider,
                        "field": field,
                        "upper": preset.provider.upper(),
                        "field_upper": field.upper(),
                    },
                )
        return self

    @property
    def image_preset(self) -> ImagePresetSettings | None:
        """Return the image model characters are drawn with, if one is usable (has a key)."""
        preset = self.image_presets.get(self.portraits.image_preset)
        if preset is None:
            return None
        provider: ProviderSettings = getattr(self.providers, preset.provider)
        return preset if provider.key.get_secret_value() else None

    @property
    def store_path(self) -> Path:
        """Return the database file, defaulting to one inside the data directory."""
        return Path(self.store.path) if self.store.path else self.data_dir / "actorbot.sqlite3"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: arguments, environment, user file, shipped defaults."""
        files = [DEFAULTS_FILE]
        user_file = _user_file()
        if user_file is not None:
            files.append(user_file)
        # TomlConfigSettingsSource merges the files in order: later ones win.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, files))


class ConfigError(Exception):
    """Settings could not be loaded; the message names the key and the problem."""


def _user_file() -> Path | None:
    explicit = os.environ.get(USER_FILE_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{USER_FILE_ENV}: no such file: {path}")
        return path
    return USER_FILE_DEFAULT if USER_FILE_DEFAULT.is_file() else None


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning validation errors into one readable ConfigError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"])
            # A check across sections (a feature and the settings it needs) names its keys.
            problems.append(f"{key}: {error['msg']}" if key else error["msg"])
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read settings: {exc}") from None
