"""Locust users for benchmarks/soak.py: people searching, uploading, listing, polling and
deleting against one `hanet serve`. Configured by soak.py through the environment:
SOAK_WORK (the run's folder: queries.json, the upload pool, where deletions are logged) and
SOAK_KEY (the API key)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from locust import HttpUser, between, task

WORK = Path(os.environ["SOAK_WORK"])
KEY = {"X-API-Key": os.environ["SOAK_KEY"]}
QUERIES: list[str] = json.loads((WORK / "queries.json").read_text())
POOL: list[Path] = sorted((WORK / "pool" / "videos").glob("*.mp4"))  # each uploaded once
random.Random(0).shuffle(POOL)
INITIAL: list[int] = json.loads((WORK / "initial_ids.json").read_text())
random.Random(1).shuffle(INITIAL)
DELETED = WORK / "deleted.txt"  # one id per line, written once the server said 204


def _log_deleted(video_id: int) -> None:
    with open(DELETED, "a") as f:
        f.write(f"{video_id}\n")


class LibraryUser(HttpUser):
    """One person: mostly searches, sometimes adds a video and watches it index, lists the
    library, deletes one of theirs or one from the library."""

    wait_time = between(1.0, 3.0)  # a person's pause between actions

    def on_start(self) -> None:
        self.mine: list[int] = []

    @task(12)
    def search(self) -> None:
        body = {"query": random.choice(QUERIES), "top_k": 10}
        with self.client.post("/search", json=body, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")

    @task(2)
    def upload(self) -> None:
        if not POOL:
            return
        path = POOL.pop()
        with open(path, "rb") as f:
            files = {"file": (path.name, f, "video/mp4")}
            with self.client.post("/videos", files=files, headers=KEY, catch_response=True) as r:
                if r.status_code == 202:
                    self.mine.append(r.json()["id"])
                else:
                    r.failure(f"{r.status_code}: {r.text[:200]}")

    @task(3)
    def poll(self) -> None:
        if self.mine:
            video_id = random.choice(self.mine)
            self.client.get(f"/videos/{video_id}", name="/videos/{id}")

    @task(2)
    def list_videos(self) -> None:
        self.client.get("/videos?limit=50", name="/videos?limit=50")

    @task(1)
    def delete(self) -> None:
        # half the time one of mine (maybe still indexing), else one of the library's
        if self.mine and random.random() < 0.5:
            video_id = self.mine.pop(random.randrange(len(self.mine)))
        elif INITIAL:
            video_id = INITIAL.pop()
        else:
            return
        with self.client.delete(
            f"/videos/{video_id}", headers=KEY, name="/videos/{id} DELETE", catch_response=True
        ) as r:
            if r.status_code == 204:
                _log_deleted(video_id)
            else:
                r.failure(f"{r.status_code}: {r.text[:200]}")
