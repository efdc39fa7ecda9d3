"""``hanet eval-moments``' path (service.moment_eval): a long corpus indexed by the real
indexer, searched as served (one compacted part, as a service serves after compaction)."""

from __future__ import annotations

import json
from pathlib import Path

from corpus.long import generate_long_corpus
from index.reader import load_current
from model import load_checkpoint
from service.moment_eval import evaluate_moments

DEMO = Path(__file__).resolve().parents[2] / "model" / "weights" / "hanet-tiny-demo.pt"


def test_a_long_corpus_is_indexed_compacted_and_every_caption_asked(tmp_path: Path) -> None:
    out = tmp_path / "long"
    generate_long_corpus(out, 2, 19, workers=1, progress=False, min_minutes=0.3, max_minutes=0.4)
    manifest = json.loads((out / "manifest.json").read_text())
    split = manifest["videos"][0]["split"]
    events = [e for v in manifest["videos"] if v["split"] == split for e in v["events"]]
    model = load_checkpoint(DEMO)
    first = out / "first.json"  # one video first: the full corpus then adds a second part
    first.write_text(json.dumps({**manifest, "videos": manifest["videos"][:1]}))
    evaluate_moments(model, first, tmp_path / "work", split=split, per_event=1)
    report = evaluate_moments(
        model, out / "manifest.json", tmp_path / "work", split=split, per_event=1
    )
    (index,) = (tmp_path / "work").glob("*/index")
    build = load_current(index)
    assert len(build.parts) == 1  # the two runs' parts merged before searching
    assert report["units"] == len(build.rows) > 2  # segments, not whole videos
    assert report["queries"] == len(events) and report["corpus_videos"] == 2
    assert report["video"]["R@10"] == 100.0  # both videos listed: the served video search
    assert report["localisation"]["mIoU"] > 10.0  # moments found where the events are
    again = evaluate_moments(
        model, out / "manifest.json", tmp_path / "work", split=split, per_event=1
    )
    assert again["corpus"] == report["corpus"]  # the index reused: the same answers
    assert again["localisation"] == report["localisation"]
