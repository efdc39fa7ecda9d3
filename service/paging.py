"""Cursor paging of search results and of the video list.

A search cursor holds the query's fingerprint, how many hits were shown so far, and the last
hit's key (its score rounded to ``SCORE_DIGITS``, its video id and moment start). The next page
searches again, that many hits deeper, and keeps the hits strictly after the key in the order
(score descending, video id, start). A video's score depends only on the query and the video
(HANet scores each pair on its own), so while videos are ingested or deleted between pages:

- no hit is shown twice in one chain of cursors, and the scores never rise from page to page;
- a video ingested meanwhile shows on a later page when it scores below the last hit shown,
  never when it scores above it (it belongs to pages already served);
- a deleted video is no longer shown; a hit's rank may move, its order relative to the others
  does not.

The video list's cursor is the last id shown (keyset on the id, newest first): ingests never
shift it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from service.search import Hit

SCORE_DIGITS = 6  # a score is keyed at this precision: repeated searches agree on it
MAX_DEPTH = 1000  # hits one chain of cursors can reach


class BadCursor(ValueError):
    """A cursor that was not made by this service, or for another query."""


@dataclass(frozen=True)
class SearchCursor:
    fingerprint: str
    shown: int
    score: float
    video_id: int
    start_s: float

    @property
    def key(self) -> tuple[float, int, float]:
        return (-self.score, self.video_id, self.start_s)


def fingerprint(*parts: object) -> str:
    """A short digest of what makes a query the same query (text or video, filters, grouping)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def hit_key(hit: Hit) -> tuple[float, int, float]:
    return (-round(hit.score, SCORE_DIGITS), hit.video_id, hit.start_s)


def _encode(payload: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _decode(text: str) -> dict:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise BadCursor("not a cursor this service made") from exc
    if not isinstance(payload, dict):
        raise BadCursor("not a cursor this service made")
    return payload


def encode_search_cursor(fp: str, shown: int, hit: Hit) -> str:
    key = hit_key(hit)
    return _encode({"f": fp, "n": shown, "s": -key[0], "v": key[1], "t": key[2]})


def decode_search_cursor(text: str, fp: str) -> SearchCursor:
    """Raises BadCursor for a cursor not made here, or made for another query."""
    p = _decode(text)
    try:
        cursor = SearchCursor(str(p["f"]), int(p["n"]), float(p["s"]), int(p["v"]), float(p["t"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadCursor("not a cursor this service made") from exc
    if not 0 < cursor.shown < MAX_DEPTH:
        raise BadCursor("not a cursor this service made")
    if cursor.fingerprint != fp:
        raise BadCursor("this cursor belongs to another query: send the query it came with")
    return cursor


def depth(cursor: SearchCursor | None, top_k: int) -> int:
    """Hits to search for: those shown, this page and one more (is there a next page?); after
    a cursor, a page more for videos ingested meanwhile that rank above it."""
    return (cursor.shown + top_k if cursor else 0) + top_k + 1


def after(hits: list[Hit], cursor: SearchCursor | None) -> list[Hit]:
    """The hits after the cursor's key, in key order."""
    ordered = sorted(hits, key=hit_key)
    if cursor is None:
        return ordered
    last = (cursor.video_id, cursor.start_s)  # never again, even should its score move
    return [h for h in ordered if hit_key(h) > cursor.key and (h.video_id, h.start_s) != last]


def page(
    hits: list[Hit], cursor: SearchCursor | None, top_k: int, fp: str
) -> tuple[list[Hit], str | None]:
    """This page's hits and the next page's cursor (None: no more hits, or MAX_DEPTH)."""
    rest = after(hits, cursor)
    shown = (cursor.shown if cursor else 0) + min(top_k, len(rest))
    chosen = rest[:top_k]
    more = len(rest) > top_k and shown < MAX_DEPTH
    return chosen, encode_search_cursor(fp, shown, chosen[-1]) if more else None


def encode_video_cursor(last_id: int) -> str:
    return _encode({"id": last_id})


def decode_video_cursor(text: str) -> int:
    """The last video id shown. Raises BadCursor."""
    p = _decode(text)
    last = p.get("id")
    if not isinstance(last, int) or isinstance(last, bool) or not 0 < last < 2**62:
        raise BadCursor("not a cursor this service made")
    return last
