"""Hosted models in the configuration: providers, video presets, image presets, portraits.

A model is configuration, not code: a preset maps our request onto one model's fields
(read by core/backends/presets.py); these classes only say what such a block may hold.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)


def _http_url(value: str) -> str:
    """Accept an empty value (feature off) or an http(s) URL with a host."""
    if value:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
    return value


# A URL setting: empty (the feature is off) or http(s) with a host.
HttpUrlText = Annotated[str, AfterValidator(_http_url)]


class ProviderSettings(BaseModel):
    """What every hosted provider shares: a key, where results may come from, pacing."""

    model_config = ConfigDict(extra="forbid")

    key: SecretStr = SecretStr("")
    api_url: str = ""
    # Hosts the provider's result files may come from ("*.example.com" matches subdomains).
    result_hosts: list[str] = []
    # Tests only: permit http and loopback addresses for exactly the listed result_hosts.
    allow_insecure: bool = False
    slots: int = Field(2, ge=1)  # fal starts at 2 concurrent requests per key
    poll_interval_seconds: float = Field(5.0, gt=0)  # grows while a job is unchanged
    # All of this provider's jobs together: bounds the bot's CPU with many jobs in flight.
    max_polls_per_second: float = Field(10.0, gt=0)
    request_timeout_seconds: float = Field(30.0, gt=0)
    # How long a submit whose answer was lost is looked for in the provider's listing.
    reconcile_seconds: float = Field(60.0, ge=0)
    rate_limit_patience_seconds: float = Field(120.0, ge=0)  # total Retry-After waits per call
    malformed_polls: int = Field(5, ge=1)  # bad replies in a row before a job is given up
    download_timeout_seconds: float = Field(300.0, gt=0)


class FalSettings(ProviderSettings):
    """fal.ai: queue API for jobs, platform API for the request listing."""

    queue_url: str = "https://queue.fal.run"
    api_url: str = "https://api.fal.ai/v1"
    result_hosts: list[str] = ["fal.media", "*.fal.media"]


class ReplicateSettings(ProviderSettings):
    """Replicate: predictions API; ``token`` is the API token (``key`` is its alias)."""

    api_url: str = "https://api.replicate.com"
    result_hosts: list[str] = ["replicate.delivery", "*.replicate.delivery"]

    @model_validator(mode="before")
    @classmethod
    def _token_is_key(cls, data: Any) -> Any:
        # The contract names Replicate's secret ``token``; one field holds it.
        if isinstance(data, dict) and "token" in data:
            data = dict(data)
            data.setdefault("key", data.pop("token"))
        return data

    @property
    def token(self) -> SecretStr:
        """Return the API token."""
        return self.key


class GagaSettings(ProviderSettings):
    """The GAGA platform (GAGA-1); API as observed in public client code."""

    api_url: str = "https://api.gaga.art"
    result_hosts: list[str] = ["*.gaga.art"]


class ProvidersSettings(BaseModel):
    """Credentials and endpoints of the hosted providers."""

    model_config = ConfigDict(extra="forbid")

    fal: FalSettings = FalSettings()
    replicate: ReplicateSettings = ReplicateSettings()
    gaga: GagaSettings = GagaSettings()


class VoiceCreationSettings(BaseModel):
    """A provider model that turns a voice sample into a reusable voice id (Kling's)."""

    model_config = ConfigDict(extra="forbid")

    model: str  # e.g. fal-ai/kling-video/create-voice
    audio_field: str = "voice_url"  # where the sample is sent
    id_field: str = "voice_id"  # where the result names the voice


class SpeechStageSettings(BaseModel):
    """Stage one of a two-stage preset: a text-to-speech model at the preset's provider.

    The line's speech is spoken once with a fixed voice id; its audio drives the video
    model (the preset's ``audio_field``), so every take of a character has the same voice.
    ``voice_field`` may be dotted for a nested object (``voice_setting.voice_id``). A voice
    name not in ``voices`` gets one of ``pool`` by a stable hash of the name.
    """

    model_config = ConfigDict(extra="forbid")

    model: str  # fal endpoint id or Replicate owner/name of the text-to-speech model
    text_field: str = "text"
    voice_field: str = "voice_id"
    voices: dict[str, str] = {}  # our voice names -> the model's fixed voice ids
    pool: list[str] = Field(min_length=1)  # voice ids an unmapped voice is given one of
    extra: dict[str, Any] = {}  # fixed fields sent as they are (e.g. output_format)
    result_field: str = "audio"  # fal: the result's {field: {"url"}}; Replicate: the output
    # The video model's limit on its driving audio: checked against the longest line the
    # prompts admit (prompts.long_clip_max_seconds), so no take can be refused after paying.
    max_seconds: float = Field(30.0, gt=0)


class PresetSettings(BaseModel):
    """One model at one provider, mapped onto our request without code.

    ``durations`` maps the clip length a user asks for (5 or 10 s) to what the model
    makes; ``duration_format`` says how that is sent ("{}" -> "5", "{}s" -> "6s", unset ->
    the integer). ``prompt`` is a template over {line}, {speech} and {language}.
    """

    model_config = ConfigDict(extra="forbid")

    provider: Literal["fal", "replicate", "gaga"]
    model: str  # fal endpoint id, Replicate owner/name, or the GAGA model name
    title: str = ""
    image_field: str = "image_url"
    prompt_field: str = "prompt"
    prompt: str = "{line}"
    duration_field: str = "duration"  # empty: the model picks its own length
    durations: dict[int, int] = {5: 5, 10: 10}
    duration_format: str | None = None
    seed_field: str = ""  # empty: the model takes no seed
    voice_field: str = ""  # empty: the model takes no voice id; "name[]" sends a list
    voices: dict[str, str] = {}  # our voice names -> the provider's voice ids
    extra: dict[str, Any] = {}  # fixed fields sent as they are
    result_field: str = "video"  # fal: where the result's file is ({field: {"url"}})
    # Two-stage presets: the spoken line's audio URL goes in ``audio_field`` of the video
    # model, made first by ``speech`` (see SpeechStageSettings).
    audio_field: str = ""
    speech: SpeechStageSettings | None = None
    price_per_second: float | None = Field(None, ge=0)  # USD, as listed by the provider
    keeps: list[Literal["seed", "voice_id", "reference_audio"]] = []  # what stays stable
    # A character's voice sample sent as reference audio in this field ("x[]": a list),
    # cut to reference_audio_max_seconds when the model takes less (Seedance 2.0: 15 s in all).
    reference_audio_field: str = ""
    reference_audio_max_seconds: float | None = Field(None, gt=0)
    # Where the photo goes when reference audio is sent, instead of image_field: Seedance
    # 2.0 takes reference audio only beside a reference image, and refuses a first frame
    # combined with references.
    reference_image_field: str = ""
    # A voice id built once per character sample at the provider, sent in voice_field.
    voice_creation: VoiceCreationSettings | None = None
    expected_run_seconds: float = Field(240.0, gt=0)  # first guess for ETAs
    take_check: bool = True

    @field_validator("prompt")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        try:
            value.format(line="", speech="", language="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"prompt may use {{line}}, {{speech}}, {{language}}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _voice_creation_needs_a_voice_field(self) -> PresetSettings:
        if self.voice_creation is not None and (self.provider != "fal" or not self.voice_field):
            raise ValueError("voice_creation needs provider = 'fal' and a voice_field")
        if self.audio_field and self.provider == "gaga":
            raise ValueError("audio_field is not supported on the GAGA platform")
        return self

    @field_validator("durations")
    @classmethod
    def _known_lengths(cls, value: dict[int, int]) -> dict[int, int]:
        if not value or any(asked not in (5, 10) or made <= 0 for asked, made in value.items()):
            raise ValueError("durations maps 5 and/or 10 to the model's seconds (> 0)")
        return value

    @model_validator(mode="after")
    def _two_stages_fit(self) -> Self:
        if (self.speech is None) != (not self.audio_field):
            raise ValueError("a two-stage preset sets both speech and audio_field")
        if self.speech is not None and self.provider == "gaga":
            raise ValueError("two-stage presets run on fal or replicate")
        return self


class ImagePresetSettings(BaseModel):
    """One hosted text-to-image model, mapped onto a description without code.

    ``prompt`` is a template over {description}; ``count_field`` asks for several images
    in one request; ``extra`` holds the model's own fields (e.g. its 16:9 size).
    """

    model_config = ConfigDict(extra="forbid")

    provider: Literal["fal"]
    model: str  # fal endpoint id
    title: str = ""
    prompt_field: str = "prompt"
    prompt: str = "{description}"
    count_field: str = "num_images"
    extra: dict[str, Any] = {}  # fixed fields sent as they are
    price_per_image: float | None = Field(None, ge=0)  # USD, as listed by the provider

    @field_validator("prompt")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        try:
            value.format(description="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"prompt may use {{description}}: {exc}") from exc
        return value


class PortraitSettings(BaseModel):
    """Characters drawn from a description: which image model, how many, kept how long."""

    model_config = ConfigDict(extra="forbid")

    image_preset: str = ""  # a name under [image_presets]; empty: the feature is off
    candidates: int = Field(4, ge=1, le=4)  # images shown to pick from
    keep_hours: float = Field(24, gt=0)  # unpicked candidates are deleted after this
    deadline_seconds: float = Field(300, gt=0)  # the model's whole run, then refunded
    max_image_bytes: int = Field(20_000_000, gt=0)  # one downloaded candidate
