"""Deployment settings, read from the environment (prefix ``HANET_``) once, at the edge."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from db.media import MediaCfg
    from indexer.job import IndexingCfg


class HanetSettings(BaseSettings):
    """Everything an operator can set. Unknown ``HANET_*`` variables are skipped by pydantic
    (``service.runtime.load_settings`` warns about them); values that would be unsafe are
    refused when the settings are built."""

    # An empty variable counts as unset (compose files pass `HANET_API_KEY=${HANET_API_KEY:-}`).
    model_config = SettingsConfigDict(env_prefix="HANET_", extra="forbid", env_ignore_empty=True)

    data_dir: Path = Field(
        default=Path("hanet-data"),
        description="Folder holding all state: the SQLite database, uploaded media, index builds.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: a SQLite file inside data_dir.",
    )
    auto_migrate: bool = Field(
        default=True,
        description="Migrate the database schema at start; false: refuse to start unless it is "
        "current (compose runs `hanet db upgrade` once instead).",
    )
    device: str | None = Field(
        default=None,
        description='Where indexing runs the video branch ("cpu", "cuda", "cuda:1"); unset: '
        "CUDA when present. Searches encode queries on the CPU.",
    )
    log_level: str = Field(default="INFO", description="Python logging level for entry points.")
    checkpoint: Path = Field(
        default=Path(__file__).resolve().parents[1] / "model" / "weights" / "hanet-tiny-demo.pt",
        description="HANet checkpoint for indexing and search; default: the bundled demo model.",
    )
    index_factory: str = Field(
        default="Flat",
        description='FAISS factory string per level: "Flat", "IVF1024,Flat", '
        '"IVF4096,PQ64", "HNSW32".',
    )
    index_rows: Literal["float16", "int8"] = Field(
        default="float16",
        description="Rerank row format of a new index build: float16, or int8 (one byte a "
        "dimension and a scale per vector: about half the memory and disk, a few ms more per "
        "search; docs/capacity.md). A published build keeps its format (compaction too); "
        "`hanet index rebuild` writes the new one.",
    )
    vector_store: Literal["faiss", "milvus"] = Field(
        default="faiss",
        description='Where the level vectors and rerank rows live: "faiss" (index builds in '
        'data_dir, shared by every process through the file system) or "milvus" (a Milvus '
        "server or Milvus Lite file; no shared folder needed).",
    )
    milvus_uri: str | None = Field(
        default=None,
        description='Milvus to use with vector_store "milvus": "http://milvus:19530" for a '
        "server, a local path ending in .db for Milvus Lite; unset: milvus.db in data_dir.",
    )
    milvus_token: SecretStr | None = Field(
        default=None, description='Milvus credentials ("user:password" or an API token).'
    )
    milvus_collection: str = Field(
        default="hanet",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        description="Prefix of this library's Milvus collections and alias.",
    )
    media_store: Literal["files", "database"] = Field(
        default="files",
        description='Where uploaded and downloaded video files are kept: "files" (the media '
        'folder in data_dir, which every API replica and worker must share) or "database" (in '
        "the database, each host reading them through a local copy; for hosts without a "
        "shared folder, as with Milvus).",
    )
    media_cache_bytes: int = Field(
        default=10 * 1024**3,
        ge=0,
        description='With media_store "database": the most this host keeps of local copies '
        "of stored files (data_dir/media-cache), least recently used removed first.",
    )
    index_batch_size: int = Field(
        default=16, ge=1, le=1024, description="Segments (index units) per model batch."
    )
    segment_min_s: float = Field(
        default=2.0, gt=0, description="Shortest segment a long video is cut into, seconds."
    )
    segment_max_s: float = Field(
        default=12.0,
        gt=0,
        description="Longest segment, seconds: a video no longer than this is one segment, a "
        "longer one is cut at its shots, and a shot longer than this into windows.",
    )
    segment_window_s: float = Field(
        default=6.0, gt=0, description="Window length for shots longer than the maximum."
    )
    segment_overlap_s: float = Field(
        default=3.0, ge=0, description="How much consecutive windows overlap, seconds."
    )
    segment_piece_s: float = Field(
        default=300.0,
        ge=0,
        allow_inf_nan=False,
        description="A long video is decoded in pieces of this length, in parallel by the "
        "decoding processes (a segment ends at each piece's start); 0: one pass.",
    )
    publish_interval_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="While more videos are queued, publish the index at most this often "
        "(each publish rewrites the level indexes); at once when the queue runs dry.",
    )
    decode_workers: int = Field(default=2, ge=1, le=64, description="Decoding processes.")
    decode_hwaccel: Literal["auto", "none", "cuda"] = Field(
        default="auto",
        description="Hardware video decoding for the indexer: auto (NVDEC where torch sees a "
        "CUDA device and FFmpeg can open one), cuda (NVDEC wherever FFmpeg can open a CUDA "
        "device) or none (software). Falls back to software decoding, never an error.",
    )
    decode_deblock: bool = Field(
        default=True,
        description="Deblock decoded frames as the codec prescribes; false skips the in-loop "
        "filter (H.264, HEVC, VP9): less decoding CPU, slightly different frames.",
    )
    media_root: Path | None = Field(
        default=None,
        description="Folder whose files POST /videos may ingest by path; unset: by upload only.",
    )
    max_upload_bytes: int = Field(
        default=2 * 1024**3, ge=1, description="Largest accepted upload, in bytes."
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="When set, POST /videos and DELETE /videos/{id} need it in X-API-Key.",
    )
    protect_reads: bool = Field(
        default=False,
        description="With api_key: searches, lists, files, thumbnails and metrics need the key "
        "too (/health and /ready stay open); the page asks for it.",
    )
    cors_origins: list[str] = Field(
        default=[],
        description="Origins other web pages may call the API from (JSON list, e.g. "
        '["https://app.example.com"]); empty: none (same-origin only).',
    )
    int8_text: bool = Field(
        default=False,
        description="Encode queries with the int8 text tower (CPU only; ~3x faster for ViT-B-32).",
    )
    search_candidates: int = Field(
        default=200,
        ge=1,
        le=10000,
        description="Units (segments) reranked by HANet per search: the union of the candidate "
        "lists cut by an estimate of HANet's score.",
    )
    search_concepts: bool = Field(
        default=True,
        description="Also nominate the units whose concept probabilities best match the "
        "sentence's (inverted lists of each unit's top concepts; FAISS builds only).",
    )
    search_list_depth: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Each candidate list (a level index, the concept lists) is read this many "
        "times deeper than the candidates wanted; deeper finds more of the best units in a "
        "large library and costs time (docs/capacity.md).",
    )
    search_exact: int = Field(
        default=5,
        ge=0,
        le=1000,
        description="Of the candidate lists' union, this many times the candidates wanted get "
        "their exact global and concept scores before the cut to the candidates; 0: all of "
        "them (cheap where the summaries are in memory: HANET_SUMMARIES_IN_MEMORY).",
    )
    rows_in_memory: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="The rerank rows are read into memory at load when they take at most this "
        "share of the available memory; else, or at 0, each search reads its candidates' rows "
        "from the page cache or the disk, and the server's resident memory stays its own.",
    )
    summaries_in_memory: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="When the rerank rows are read cold, each unit's summary (global vector "
        "and concept probabilities: about a 17th of its rows in int8) is still read into memory "
        "at load when the summaries take at most this share of the available memory; 0: cold "
        "as the rest.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Torch and FAISS threads of the search thread and of the in-process indexer; "
        "unset: one per core.",
    )
    search_batch_max: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="Most searches served together in one batch (queries that arrive while one "
        "runs wait and go through the model and the indexes together).",
    )
    search_wait_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Longest a search waits for its turn; longer: 503 with Retry-After.",
    )
    query_cache_size: int = Field(
        default=1024,
        ge=0,
        le=1_000_000,
        description="Recent queries whose text embeddings are kept (a repeat skips the text "
        "tower); 0 keeps none.",
    )

    webhook_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        max_length=2000,
        description="URL that receives a signed POST when a video is indexed or fails "
        "(docs: the X-Hanet-Signature header); unset: no webhooks.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Key of the webhooks' HMAC-SHA256 signature (16+ characters); required with "
        "webhook_url.",
    )
    webhook_max_attempts: int = Field(
        default=10, ge=1, le=100, description="Attempts per webhook event before it is failed."
    )
    webhook_retry_s: float = Field(
        default=10.0,
        gt=0,
        le=86400,
        description="Wait before a webhook's second attempt, seconds; doubled after each "
        "failure, up to an hour.",
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="How long one webhook POST may take, seconds."
    )
    url_ingest: bool = Field(
        default=True, description='Whether POST /videos accepts {"url": ...} (http/https).'
    )
    url_allow_private: bool = Field(
        default=False,
        description="Let ingest by URL reach private, loopback, link-local and other "
        "non-public addresses (only for a trusted network: it opens the server to SSRF).",
    )
    url_allow_networks: list[str] = Field(
        default=[],
        description="Non-public networks ingest by URL may reach anyway (JSON list of CIDRs, "
        'e.g. ["10.1.2.0/24"]: an internal media server).',
    )
    url_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Ingest by URL: longest wait to connect or for the next bytes, seconds.",
    )
    url_max_s: float = Field(
        default=3600.0, gt=0, description="Ingest by URL: longest a whole download may take."
    )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return level

    @field_validator("api_key")
    @classmethod
    def _strong_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("api_key must be at least 16 characters")
        return value

    @model_validator(mode="after")
    def _segments_fit(self) -> HanetSettings:
        if self.segment_window_s + self.segment_min_s > self.segment_max_s:
            raise ValueError("segments need segment_window_s + segment_min_s <= segment_max_s")
        if self.segment_window_s - self.segment_overlap_s < self.segment_min_s:
            raise ValueError("windows must advance by segment_min_s at least (window - overlap)")
        if 0 < self.segment_piece_s <= self.segment_max_s:
            raise ValueError("segment_piece_s must be 0 (one pass) or longer than segment_max_s")
        return self

    @field_validator("webhook_secret")
    @classmethod
    def _secret_strong_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("webhook_secret must be at least 16 characters")
        return value

    @field_validator("url_allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
        return value

    @model_validator(mode="after")
    def _webhooks_are_signed(self) -> HanetSettings:
        if self.webhook_url is not None and self.webhook_secret is None:
            raise ValueError("webhook_url needs webhook_secret: every delivery is signed")
        return self

    @model_validator(mode="after")
    def _reads_need_a_key(self) -> HanetSettings:
        if self.protect_reads and self.api_key is None:
            raise ValueError("protect_reads needs api_key: there is no key to ask for")
        return self

    @property
    def indexing(self) -> IndexingCfg:
        """The indexer worker's options."""
        from indexer.fetch_url import AddressPolicy, FetchCfg
        from indexer.job import IndexingCfg
        from indexer.segments import SegmentCfg

        fetch = FetchCfg(
            download_dir=self.media.cache_dir if self.media.in_database else self.upload_dir,
            max_bytes=self.max_upload_bytes,
            policy=AddressPolicy.of(self.url_allow_private, self.url_allow_networks),
            timeout_s=self.url_timeout_s,
            max_s=self.url_max_s,
        )
        return IndexingCfg(
            fetch=fetch if self.url_ingest else None,
            media=self.media,
            events=self.webhook_url is not None,
            factory=self.index_factory,
            rows=self.index_rows,
            batch_size=self.index_batch_size,
            decode_workers=self.decode_workers,
            publish_interval_s=self.publish_interval_s,
            segments=SegmentCfg(
                min_s=self.segment_min_s,
                max_s=self.segment_max_s,
                window_s=self.segment_window_s,
                overlap_s=self.segment_overlap_s,
                piece_s=self.segment_piece_s,
                hwaccel=self.decode_hwaccel,
                deblock=self.decode_deblock,
            ),
        )

    @property
    def media(self) -> MediaCfg:
        """Where video files are kept, and this host's copies of those in the database."""
        from db.media import MediaCfg

        return MediaCfg(self.media_store, self.data_dir / "media-cache", self.media_cache_bytes)

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def upload_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str((self.data_dir / "milvus.db").resolve())

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'hanet.sqlite3').resolve()}"
