"""The best corpus moment retrieval any model could reach on a long procedural corpus
(``hanet synth --long``): a caption names what happens (each action's thing, by colour, shape
and size, and the action), and every other event of the corpus where the same happens fits the
caption as well as the true one. A perfect model ranks those events first, in an order the
caption cannot decide; ties broken at random, its expected R@1 is the mean of 1 / (events
alike). Nothing is rendered: the corpus is planned from its seed, as ``hanet synth`` plans it.

    python benchmarks/moment_ceiling.py --videos 100 --seed 0 --split test --per-event 2

prints the ceilings of moment R@1, video R@1 and R@1 given the video (localisation), with
and without size counted as told apart (the captions use several words for each size), and
how many test events have an alike event elsewhere. ``hanet eval-moments`` reports what the
served model reaches on the same corpus and queries.
"""

from __future__ import annotations

import argparse
import collections
import statistics

from corpus.long import manifest_entry, plan_long_corpus


def _what(video: dict, event: dict, size: bool) -> tuple:
    things = video["shots"][event["shot"]]["things"]
    return tuple(
        (t["colour"], t["shape"], t["size"] if size else "", a["action"])
        for a in event["actions"]
        for t in [things[a["thing"]]]
    )


def ceilings(videos: list[dict], split: str, per_event: int, size: bool) -> dict:
    """Expected R@1 (%) of a perfect model, ties broken at random, over the first
    ``per_event`` captions of every event of ``split``."""
    alike = collections.defaultdict(set)
    for video in videos:
        for number, event in enumerate(video["events"]):
            alike[_what(video, event, size)].add((video["id"], number))
    moment, video_r1, given, shared = [], [], [], 0
    for video in videos:
        if video["split"] != split:
            continue
        for event in video["events"]:
            same = alike[_what(video, event, size)]
            queries = min(per_event, len(event["captions"]))
            moment += [100 / len(same)] * queries
            video_r1 += [100 / len({v for v, _ in same})] * queries
            given += [100 / sum(v == video["id"] for v, _ in same)] * queries
            shared += queries * (len(same) > 1)
    return {
        "queries": len(moment),
        "moment_r1": statistics.mean(moment),
        "video_r1": statistics.mean(video_r1),
        "given_video_r1": statistics.mean(given),
        "with_alike_elsewhere_pct": 100 * shared / len(moment),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-minutes", type=float, default=2.0)
    parser.add_argument("--max-minutes", type=float, default=10.0)
    parser.add_argument("--split", default="test")
    parser.add_argument("--per-event", type=int, default=2)
    args = parser.parse_args()
    plans = plan_long_corpus(args.videos, args.seed, args.min_minutes, args.max_minutes)
    videos = [manifest_entry(v) for v in plans]
    events = sum(len(v["events"]) for v in videos)
    print(f"{args.videos} videos, {events} events; queries: {args.split}, {args.per_event}/event")
    for size in (True, False):
        c = ceilings(videos, args.split, args.per_event, size)
        print(
            f"size told apart: {'yes' if size else 'no '}  queries {c['queries']}  "
            f"moment R@1 <= {c['moment_r1']:.1f}  video R@1 <= {c['video_r1']:.1f}  "
            f"given the video R@1 <= {c['given_video_r1']:.1f}  "
            f"events with an alike one elsewhere {c['with_alike_elsewhere_pct']:.1f}%"
        )


if __name__ == "__main__":
    main()
