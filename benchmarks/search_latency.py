"""/search latency over HTTP at scale (the service issue's benchmark).

Builds (once, reused on later runs) an index of ``--videos`` ViT-B-32 videos whose embeddings are
generated directly (random unit vectors in the model's shapes: the same FAISS indexes, rerank
store and database rows the indexer writes, without decoding 100,000 files), starts
`hanet serve --api-only` on it with a random-weights ViT-B-32 checkpoint, and times POST /search
over loopback from two clients taking turns, one request at a time (httpx, and the standard
library's http.client, whose own overhead is smaller). Then, with the server stopped, it
times the same queries stage by stage in-process to show where the time goes.

With ``--concurrency N [N ...]`` it measures load instead: for each N, N clients (threads, each
with its own keep-alive connection) search back to back for ``--duration`` seconds, each
request a different sentence (a closed loop: N searches always in flight). With ``--rate R
[R ...]``, searches arrive at random (Poisson) at R per second whatever the answers (an open
loop, the way independent users arrive), latency counted from each search's arrival. Each run
prints the throughput (answered searches per second), the latency of the answered ones, and how
many were refused (503) or failed. ``--server-checkout`` serves another checkout's code (a git
worktree of an earlier commit) with these clients.

    .venv/bin/python benchmarks/search_latency.py --videos 100000
    .venv/bin/python benchmarks/search_latency.py --videos 100000 --concurrency 1 32 --duration 30
    .venv/bin/python benchmarks/search_latency.py --videos 100000 --rate 30 60 --duration 30
    .venv/bin/python benchmarks/search_latency.py --videos 100000 --units-per-video 10

``--units-per-video U`` lays the same ``--videos`` index units out as ``--videos / U`` videos of
U consecutive 10-second segments each (unit ids ``index.vectors.unit_id(video, segment)``), the
way long videos are indexed: the same vectors, grouped by video (its own folder in ``--work``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from index import rows  # noqa: E402
from index.reader import FIELDS, GRAM_FILES  # noqa: E402
from index.vectors import unit_id  # noqa: E402
from index.writer import new_build, publish  # noqa: E402
from model import ConceptVocab, VideoEmbeddings, create_model  # noqa: E402
from model.scores import UNIT_FIELDS, gram  # noqa: E402
from service.settings import HanetSettings  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from search_load import load_runs, report_load  # noqa: E402


def _unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def build_index(
    work: Path,
    units: int,
    factory: str,
    chunk: int = 2000,
    units_per_video: int = 1,
    rows_format: str = "float16",
) -> Path:
    """Checkpoint, database rows and a published index build for ``units`` index units: as
    many one-unit videos, or ``units / units_per_video`` videos of ``units_per_video``
    consecutive 10-second segments each. The vectors are the same whatever the layout (one
    random stream, drawn unit by unit); only which video each unit belongs to differs. The
    rerank rows are written in ``rows_format`` (``index.rows``), as the writer would."""
    per = units_per_video
    if per < 1 or units % per:
        raise SystemExit(f"{units} units do not split into videos of {per} units")
    videos, chunk = units // per, max(per, chunk // per * per)  # a chunk holds whole videos
    ckpt, model = random_checkpoint(work)
    sha, cfg = model.checkpoint_sha256, model.cfg
    insert_videos(work, videos, per, sha)

    index_dir = work / "index"
    build = new_build(index_dir, cfg, sha, factory, rows_format)
    folder = build.root / "parts" / "000000"
    folder.mkdir(parents=True)
    t, d, sa, se = cfg.max_frames, cfg.embed_dim, cfg.num_action_segments, cfg.num_entity_segments
    shapes = {
        "global_": (d,),
        "action_frames": (t, d),
        "entity_frames": (t, d),
        "frame_mask": (t,),
        "action_segments": (sa, d),
        "action_spans": (sa, 2),
        "entity_segments": (se, d),
        "verb_probs": (cfg.num_verbs,),
        "noun_probs": (cfg.num_nouns,),
    }
    kinds = {"frame_mask": np.bool_, "action_spans": np.int64}
    first_rows = {  # what each stored file looks like: its dtype, per unit shape
        file: (array.dtype, array.shape[1:])
        for f in FIELDS
        for file, array in rows.encode(
            f, np.zeros((1, *shapes[f]), kinds.get(f, np.float32)), rows_format
        ).items()
    }
    out = {
        file: np.lib.format.open_memmap(folder / f"{file}.npy", "w+", dtype, (units, *shape))
        for file, (dtype, shape) in first_rows.items()
    }
    grams = {  # as publish writes them: of the float16 rows
        f: np.lib.format.open_memmap(
            folder / f"{GRAM_FILES[f]}.npy", "w+", np.float32, (units, shapes[f][0], shapes[f][0])
        )
        for f in UNIT_FIELDS
    }
    rng = np.random.default_rng(0)
    began = time.perf_counter()
    for lo in range(0, units, chunk):
        n = min(chunk, units - lo)
        made = {
            f: _unit(rng, (n, *shapes[f]))
            for f in (
                "global_",
                "action_frames",
                "entity_frames",
                "action_segments",
                "entity_segments",
            )
        }
        made["frame_mask"] = np.ones((n, t), bool)
        first = rng.integers(0, t - cfg.action_window + 1, size=(n, sa))
        made["action_spans"] = np.stack([first, first + cfg.action_window - 1], axis=-1)
        made["verb_probs"] = rng.random((n, cfg.num_verbs), dtype=np.float32)
        made["noun_probs"] = rng.random((n, cfg.num_nouns), dtype=np.float32)
        for f in FIELDS:
            for file, array in rows.encode(f, made[f], rows_format).items():
                out[file][lo : lo + n] = array
        for f in UNIT_FIELDS:
            scale = out.get(f + rows.SCALE)
            stored = rows.decode(
                f, out[f][lo : lo + n], None if scale is None else scale[lo : lo + n]
            )
            grams[f][lo : lo + n] = gram(stored, torch.float32)
        for first in range(0, n, per):  # one video: its units' vectors in segment order
            video_units = [
                {
                    "event": made["global_"][i : i + 1],
                    "action": made["action_segments"][i],
                    "entity": made["entity_segments"][i],
                }
                for i in range(first, first + per)
            ]
            build.vectors.add((lo + first) // per + 1, video_units)
        rate = (lo + n) / (time.perf_counter() - began)
        print(f"\r  generated {lo + n}/{units} units ({rate:.0f}/s)", end="", flush=True)
    print()
    for array in [*out.values(), *grams.values()]:
        array.flush()
    segment = np.arange(units) % per  # each row's segment in its video: 10 s each
    times = (np.arange(t, dtype=np.float32) + 0.5) * (10.0 / t)
    np.save(folder / "frame_times.npy", (times + 10.0 * segment[:, None]).astype(np.float32))
    spans = np.stack([segment, segment + 1], axis=-1) * 10.0
    np.save(folder / "spans.npy", spans.astype(np.float32))
    ids = [unit_id(r // per + 1, r % per) for r in range(units)]
    np.save(folder / "unit_ids.npy", np.array(ids, dtype=np.int64))
    build.manifest["parts"] = ["000000"]
    empty = VideoEmbeddings(**{f: torch.zeros(0) for f in FIELDS})
    nothing, no_times, no_spans = (
        np.zeros(0, np.int64),
        np.zeros((0, t), np.float32),
        np.zeros((0, 2)),
    )
    # the vectors and rows are in place: publish only writes the version around them
    publish(index_dir, build, nothing, empty, no_times, no_spans, add_vectors=False)
    return ckpt


def random_checkpoint(work: Path):
    """A random-weights ViT-B-32 checkpoint in ``work`` (float16), and its model."""
    ckpt = work / "vitb32-random.pt"
    cfg_vocab = create_model("ViT-B-32").cfg
    vocab = ConceptVocab(
        tuple(f"verb{i}" for i in range(cfg_vocab.num_verbs)),
        tuple(f"noun{i}" for i in range(cfg_vocab.num_nouns)),
    )
    model = create_model("ViT-B-32", vocab=vocab)
    model.save(str(ckpt), dtype=torch.float16)
    return ckpt, model


def insert_videos(work: Path, videos: int, per: int, sha: str) -> None:
    """Database rows (the service's database under ``work``) of videos 1..``videos``, indexed
    by checkpoint ``sha``, of ``per`` 10-second segments each."""
    from sqlalchemy import insert

    from db.schema import Video
    from service.runtime import open_database

    engine = open_database(HanetSettings(data_dir=work), migrate=True)  # as the service's
    with engine.begin() as conn:
        for start in range(1, videos + 1, 10000):
            conn.execute(
                insert(Video),
                [
                    {
                        "id": i,
                        "content_sha256": f"{i:064x}",
                        "media_path": f"/media/{i}.mp4",
                        "title": f"video {i}",
                        "status": "indexed",
                        "duration_s": 10.0 * per,
                        "segments": per,
                        "checkpoint_sha256": sha,
                    }
                    for i in range(start, min(videos, start + 9999) + 1)
                ],
            )
    engine.dispose()


def sentences(count: int, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    words = {
        "size": "small big tiny huge".split(),
        "colour": "red blue green yellow purple white orange pink".split(),
        "shape": "circle square star triangle heart diamond cross ring".split(),
        "verb": "moves left|moves right|grows|shrinks|rotates|bounces|blinks|appears".split("|"),
    }
    pick = lambda k: words[k][rng.integers(len(words[k]))]  # noqa: E731
    out = []
    for _ in range(count):
        first = f"a {pick('size')} {pick('colour')} {pick('shape')} {pick('verb')}"
        if rng.random() < 0.5:
            first += f", then a {pick('colour')} {pick('shape')} {pick('verb')}"
        out.append(first)
    return out


def as_environment(settings: HanetSettings) -> dict[str, str]:
    """``settings`` as the HANET_* variables a `hanet` process reads them from."""
    values = settings.model_dump(exclude_none=True, exclude={"api_key"})
    return {
        f"HANET_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in values.items()
    }


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


HANET_CLI = [sys.executable, "-c", "from service.cli import app; app()"]  # this checkout's


def start_server(
    env: dict[str, str], port: int, *options: str, checkout: Path = ROOT, warm: bool = True
) -> subprocess.Popen:
    """`hanet serve --port PORT OPTIONS...` of ``checkout`` (this one), in the background;
    ``warm`` False: its rerank rows are not read in at load (``HANET_ROWS_IN_MEMORY=0``:
    searches read them cold)."""
    return subprocess.Popen(
        [*HANET_CLI, "serve", "--port", str(port), *options],
        env=env if warm else {**env, "HANET_ROWS_IN_MEMORY": "0"},
        cwd=checkout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(client, server: subprocess.Popen, path: str, ready) -> None:
    """Poll GET ``path`` until ``ready(response)``; stop with the server's error if it exits."""
    import httpx

    while True:
        try:
            if ready(client.get(path)):
                return
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"the server stopped: {server.stderr.read()[-2000:]}")
        time.sleep(0.5)


def over_http(
    env: dict[str, str],
    port: int,
    queries: list[str],
    warmup: int,
    warm: bool = True,
    index_dir: Path | None = None,
) -> dict:
    """POST /search for each query from two clients over keep-alive connections, taking turns
    (which goes first alternates): httpx, and the standard library's http.client, whose own
    overhead is lower (closer to curl's). Per client: wall times and the server's took_ms; the
    server's resident memory once ready and after the searches (``rss_parts_mb``; "under":
    of files under ``index_dir``)."""
    import http.client
    import json

    import httpx

    server = start_server(env, port, "--api-only", warm=warm)
    base = f"http://127.0.0.1:{port}"
    plain = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def via_stdlib(q: str) -> dict:
        body = json.dumps({"query": q, "top_k": 10})
        plain.request("POST", "/search", body, {"Content-Type": "application/json"})
        r = plain.getresponse()
        data = r.read()
        if r.status != 200:
            raise SystemExit(f"/search answered {r.status}: {data[:500]!r}")
        return json.loads(data)

    try:
        began = time.perf_counter()
        with httpx.Client(base_url=base, timeout=120) as client:
            # ready, with the rerank rows read into memory
            wait_ready(
                client,
                server,
                "/ready",
                lambda r: r.status_code == 200 and r.json()["checks"]["rerank_rows"] == "ok",
            )
            print(f"  server ready in {time.perf_counter() - began:.1f} s")
            ready_rss = rss_parts_mb(server.pid, index_dir)

            def via_httpx(q: str) -> dict:
                r = client.post("/search", json={"query": q, "top_k": 10})
                r.raise_for_status()
                return r.json()

            clients = {"httpx": via_httpx, "http.client": via_stdlib}
            out = {name: {"wall": [], "took": [], "hits": []} for name in clients}
            for i, q in enumerate(queries[:warmup] + queries):
                turns = list(clients.items())
                for name, send in turns if i % 2 else turns[::-1]:
                    t0 = time.perf_counter()
                    answer = send(q)
                    elapsed = (time.perf_counter() - t0) * 1000
                    if i >= warmup:
                        out[name]["wall"].append(elapsed)
                        out[name]["took"].append(answer["took_ms"])
                        out[name]["hits"].append(len(answer["hits"]))
        rss = rss_parts_mb(server.pid, index_dir)
    finally:
        plain.close()
        server.terminate()
        server.wait(timeout=60)
    return {"clients": out, "rss_mb": rss, "ready_rss_mb": ready_rss}


def under_load(
    env: dict[str, str], port: int, args: argparse.Namespace, queries: list[str]
) -> list[dict]:
    """The load runs (``search_load.load_runs``) against one server of
    ``args.server_checkout``, once it is ready."""
    import httpx

    server = start_server(env, port, "--api-only", checkout=args.server_checkout)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            wait_ready(
                client,
                server,
                "/ready",
                lambda r: r.status_code == 200 and r.json()["checks"]["rerank_rows"] == "ok",
            )
            loads = [("clients", n) for n in args.concurrency or ()]
            loads += [("rate", r) for r in args.rate or ()]
            runs = load_runs(client, port, loads, args.duration, args.warmup, queries)
        rss = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    for run in runs:
        run["rss_mb"] = rss
    return runs


def _rss_mb(pid: int) -> float:
    return rss_parts_mb(pid)["VmRSS"]


def rss_parts_mb(pid: int, folder: Path | None = None) -> dict[str, float]:
    """A process's resident memory, MB: in all (VmRSS), its own (RssAnon: heap, FAISS
    indexes) and mapped files' pages (RssFile: page cache the kernel may take back, e.g.
    memory-mapped rerank rows, and shared libraries); with ``folder``, "under" is the part of
    RssFile mapped from files under it (/proc/<pid>/smaps: the rerank rows of an index)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(line.split()[1]) / 1024
    if folder is not None:
        out["under"] = _mapped_under_kb(pid, str(folder.resolve())) / 1024
    return out


def _mapped_under_kb(pid: int, folder: str) -> int:
    """Resident kB of a process's mappings of files under ``folder``."""
    total, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and not head[0].endswith(":"):  # a mapping's line: address range ... path
            inside = len(head) >= 6 and head[5].startswith(folder + "/")
        elif inside and head[0] == "Rss:":
            total += int(head[1])
    return total


class Laps:
    """A stopwatch for ``service.search.search``'s ``lap``: milliseconds per stage."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.last = time.perf_counter()

    def start(self) -> None:
        self.last = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.times.setdefault(stage, []).append((now - self.last) * 1000)
        self.last = now


def stages(settings: HanetSettings, queries: list[str], warm: bool = True) -> dict:
    """The /search route's work, timed stage by stage, with the parts the service builds for
    it (service.runtime, from the same settings): the search with a stopwatch, then the
    lookup of the hits' rows, as the route does them. ``warm`` False: the rows are not read
    in first (``HANET_ROWS_IN_MEMORY=0``), as a server started with ``warm`` False."""
    from db.connect import HitRows
    from service import runtime

    settings = settings if warm else settings.model_copy(update={"rows_in_memory": 0.0})
    engine = runtime.open_database(settings)
    searcher = runtime.build_searcher(settings, runtime.load_model(settings, serving=True))
    build = searcher.index.current()
    build.warm(share=settings.rows_in_memory, summaries=settings.summaries_in_memory)
    rows = HitRows(engine)  # as the route reads them
    laps = Laps()
    for q in queries:
        laps.start()
        hits = searcher.search(q, 10, lap=laps)
        rows([h.video_id for h in hits])
        laps("database")
    rows.close()
    engine.dispose()
    return {"times": laps.times}


def print_stages(parts: dict) -> None:
    """``stages``' times: per stage and per query in all, median / p99."""
    print("where the time goes (in-process, median / p99 ms):")
    for key, values in parts["times"].items():
        print(f"  {key:9s} {pct(values, 50):6.2f} / {pct(values, 99):6.2f}")
    totals = [sum(v) for v in zip(*parts["times"].values(), strict=True)]
    print(f"  {'total':9s} {pct(totals, 50):6.2f} / {pct(totals, 99):6.2f}   (per-query sums)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--videos", type=int, default=100_000, help="index units (videos of one unit each)"
    )
    parser.add_argument(
        "--units-per-video",
        type=int,
        default=1,
        help="lay the units out as --videos / N videos of N consecutive segments each",
    )
    parser.add_argument("--work", type=Path, default=ROOT / "hanet-data" / "bench-search")
    parser.add_argument("--factory", default="IVF512,Flat")
    parser.add_argument(
        "--rows", default="float16", choices=rows.ROW_FORMATS, help="rerank row format"
    )
    parser.add_argument("--rerank", type=int, default=200)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--fp32-text", action="store_true", help="no int8 text tower")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", help="clients at once, per run (load mode)"
    )
    parser.add_argument(
        "--rate", type=float, nargs="+", help="searches arriving per second, per run (load mode)"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per load run")
    parser.add_argument("--threads", type=int, help="the server's HANET_THREADS (default: unset)")
    parser.add_argument(
        "--no-warm",
        action="store_true",
        help="do not read the rerank rows in at load (HANET_ROWS_IN_MEMORY=0): searches read "
        "their rows cold (from the page cache, or from disk when it is cold)",
    )
    parser.add_argument(
        "--server-checkout", type=Path, default=ROOT, help="whose code serves (default: this)"
    )
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    per = args.units_per_video
    layout = f"{args.videos} units" if per == 1 else f"{args.videos // per} videos of {per} units"
    work = args.work / f"{args.videos}-{args.factory.replace(',', '_')}"
    if per != 1:
        work = work.with_name(f"{work.name}-{per}-per-video")
    if args.rows != "float16":
        work = work.with_name(f"{work.name}-{args.rows}")
    ckpt = work / "vitb32-random.pt"
    if not (work / "index" / "CURRENT").exists():
        print(f"building an index of {layout} in {work} ...")
        work.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        build_index(work, args.videos, args.factory, units_per_video=per, rows_format=args.rows)
        print(f"  built in {time.perf_counter() - began:.0f} s")
    int8 = not args.fp32_text
    settings = HanetSettings(
        data_dir=work,
        checkpoint=ckpt,
        int8_text=int8,
        search_candidates=args.rerank,
        log_level="WARNING",
        query_cache_size=0,  # a repeated sentence must still run the text branch
        threads=args.threads,
    )
    env = {**os.environ, **as_environment(settings)}
    queries = sentences(args.queries)
    if args.concurrency or args.rate:
        print(
            f"\n{layout}, ViT-B-32 (random weights), factory {args.factory}, text "
            f"tower {'int8' if int8 else 'float32'}, rerank {args.rerank}, top_k 10, "
            f"{args.duration:g} s per run, HANET_THREADS {args.threads}, {os.cpu_count()} CPUs"
        )
        report_load(
            under_load(env, args.port, args, sentences(10_000, seed=2)), args.server_checkout
        )
        return
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    http = over_http(env, args.port, queries, args.warmup, not args.no_warm, work / "index")
    parts = stages(settings, queries, warm=not args.no_warm)
    print(
        f"\n{layout}, ViT-B-32 (random weights), factory {args.factory}, rows {args.rows}, "
        f"{'rows not warmed, ' if args.no_warm else ''}"
        f"text tower {'int8' if int8 else 'float32'}, rerank {args.rerank}, top_k 10, "
        f"{len(queries)} queries, two clients taking turns, {os.cpu_count()} CPUs, load "
        f"average {load} before"
    )
    for name, got in http["clients"].items():
        wall, took = got["wall"], got["took"]
        print(
            f"HTTP /search, {name:11s}  p50 {pct(wall, 50):6.1f} ms   p99 "
            f"{pct(wall, 99):6.1f} ms   (server took_ms p50 {pct(took, 50):.1f}, "
            f"p99 {pct(took, 99):.1f})"
        )
    for when, rss in (("ready", http["ready_rss_mb"]), ("after the searches", http["rss_mb"])):
        print(
            f"server RSS {when}: {rss['VmRSS']:.0f} MB (own, RssAnon {rss['RssAnon']:.0f} MB; "
            f"mapped files, RssFile {rss['RssFile']:.0f} MB, of which the index's "
            f"{rss['under']:.0f} MB)"
        )
    print_stages(parts)
    for name, got in http["clients"].items():
        http_only = [w - t for w, t in zip(got["wall"], got["took"], strict=True)]
        print(
            f"  {'http':9s} {pct(http_only, 50):6.2f} / {pct(http_only, 99):6.2f}   (client "
            f"wall time minus the server's took_ms, {name})"
        )


if __name__ == "__main__":
    main()
