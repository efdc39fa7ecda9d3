"""A claimed job made readable on this host: a video ingested by URL downloaded (and, with
the media store in the database, stored there for the other hosts), a file stored in the
database copied to this host's folder (``db.media``). A job that cannot be made readable is
failed with the reason, as a refused upload would be."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import Engine

from db import media, queue
from db.media import MediaCfg, MediaMissing
from db.queue import Claim
from indexer.decode import DecodeError, probe_media
from indexer.fetch_url import FetchCfg, FetchError, download
from model import file_sha256


def local_claim(
    engine: Engine,
    worker: str,
    claim: Claim,
    fetch: FetchCfg | None,
    store: MediaCfg | None,
    lease_s: float,
) -> Claim | None:
    """``claim`` with a file on this host; None when it could not have one (its row failed
    with the reason). The worker's leases are renewed while a long download runs."""
    if claim.source_url is not None:
        return _fetch_claim(engine, worker, claim, fetch, store, lease_s)
    try:
        return local_file(engine, claim, store)
    except MediaMissing as exc:
        queue.fail(engine, claim.video_id, worker=worker, reason=str(exc))
        return None


def local_file(engine: Engine, claim: Claim, store: MediaCfg | None) -> Claim:
    """``claim`` (of a video already ingested) with a file on this host; MediaMissing when a
    file stored in the database cannot be had."""
    return Claim(claim.video_id, str(media.local_path(engine, claim.media_path, store)))


def _fetch_claim(
    engine: Engine,
    worker: str,
    claim: Claim,
    fetch: FetchCfg | None,
    store: MediaCfg | None,
    lease_s: float,
) -> Claim | None:
    """A claimed video ingested by URL, downloaded, checked to be a video and recorded."""
    if fetch is None:
        reason = "this indexer worker is not set up to download videos ingested by URL"
        queue.fail(engine, claim.video_id, worker=worker, reason=reason)
        return None
    renewed = time.monotonic()

    def keep_leases(_size: int) -> None:
        nonlocal renewed
        if time.monotonic() - renewed > lease_s / 3:
            queue.renew_all(engine, worker=worker, lease_s=lease_s)
            renewed = time.monotonic()

    try:
        path, sha256, media_type, new_file = fetch_video(claim.source_url, fetch, keep_leases)
    except FetchError as exc:
        queue.fail(engine, claim.video_id, worker=worker, reason=str(exc))
        return None
    recorded = str(path)
    if store is not None and store.in_database:  # readable by every host before it is named
        media.put(engine, path, sha256)
        recorded = media.stored_name(sha256, path.suffix)
        path = media.keep_copy(path, recorded, store)
    same = queue.fetched(
        engine,
        claim.video_id,
        worker=worker,
        media_path=recorded,
        sha256=sha256,
        media_type=media_type,
    )
    if same is not None:
        if new_file:
            path.unlink(missing_ok=True)
        if media.is_stored(recorded):
            media.remove_unused(engine, sha256)
        reason = f"the same video is already ingested, as video {same}"
        queue.fail(engine, claim.video_id, worker=worker, reason=reason)
        return None
    return Claim(claim.video_id, str(path))


def fetch_video(
    url: str, cfg: FetchCfg, on_progress: Callable[[int], None] | None = None
) -> tuple[Path, str, str, bool]:
    """Download ``url`` and keep it, if it is a video (the checks of an upload), in the
    download folder as ``<sha256><suffix>``: (path, sha256, media type, whether the file is
    new there). FetchError with the reason otherwise; nothing is kept then."""
    part = download(url, cfg, on_progress)
    try:
        media_info = probe_media(part)
        sha256 = file_sha256(part)
        final = cfg.download_dir / (sha256 + _suffix(url))
        new_file = not final.exists()
        os.replace(part, final)  # a rename: the bytes are written once
    except DecodeError as exc:
        raise FetchError(f"not a video: {exc}") from exc
    finally:
        part.unlink(missing_ok=True)  # refused (renamed away otherwise)
    return final, sha256, media_info.media_type, new_file


def _suffix(url: str) -> str:
    """The stored file's suffix: the URL path's (".mp4"), when it looks like one."""
    suffix = Path(urlsplit(url).path).suffix.lower()
    return suffix if suffix[1:].isalnum() and len(suffix) <= 10 else ".video"
