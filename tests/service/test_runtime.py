"""The composition root: settings, database, model and search engine for every entry point."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from model import CheckpointError, HANet, get_config
from service import runtime
from service.candidates import Depth
from service.settings import HanetSettings


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    HANet(get_config("tiny")).eval().save(str(path))
    return path


def test_unknown_hanet_variables_are_found() -> None:
    environ = {"HANET_TRHEADS": "1", "HANET_THREADS": "1", "hanet_data_dir": "x", "PATH": "/bin"}
    assert runtime.unknown_variables(environ) == ["HANET_TRHEADS"]


def test_load_settings_warns_about_a_mistyped_setting(monkeypatch, caplog) -> None:
    monkeypatch.setenv("HANET_TRHEADS", "1")
    monkeypatch.setenv("HANET_THREADS", "2")
    with caplog.at_level(logging.WARNING, logger="service.runtime"):
        settings = runtime.load_settings()
    assert settings.threads == 2
    assert "HANET_TRHEADS" in caplog.text and "HANET_THREADS," in caplog.text  # with the known


def test_load_settings_is_quiet_when_every_name_is_known(monkeypatch, caplog) -> None:
    monkeypatch.setenv("HANET_THREADS", "2")
    for name in [k for k in runtime.os.environ if k.startswith("HANET_") and k != "HANET_THREADS"]:
        monkeypatch.delenv(name)
    with caplog.at_level(logging.WARNING, logger="service.runtime"):
        runtime.load_settings()
    assert "unknown settings" not in caplog.text


def test_a_database_is_migrated_or_checked(tmp_path) -> None:
    import migrations

    settings = HanetSettings(data_dir=tmp_path, auto_migrate=False)
    with pytest.raises(runtime.SchemaError, match="hanet db upgrade"):
        runtime.open_database(settings)
    engine = runtime.open_database(settings, migrate=True)
    assert migrations.current_revision(engine) == migrations.head_revision()
    engine.dispose()
    runtime.open_database(settings).dispose()  # at the newest revision: accepted unmigrated


def test_auto_migrate_migrates_a_new_database(tmp_path) -> None:
    import migrations

    engine = runtime.open_database(HanetSettings(data_dir=tmp_path))
    assert migrations.current_revision(engine) == migrations.head_revision()
    engine.dispose()


def test_the_indexing_device_is_the_setting_or_cuda_when_present() -> None:
    assert runtime.indexing_device(HanetSettings(device="cpu")) == "cpu"
    assert runtime.indexing_device(HanetSettings(device="cuda:1")) == "cuda:1"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert runtime.indexing_device(HanetSettings()) == expected


def test_load_model_loads_the_checkpoint_for_serving(checkpoint) -> None:
    settings = HanetSettings(checkpoint=checkpoint)
    plain = runtime.load_model(settings)
    served = runtime.load_model(settings, serving=True)
    assert plain.checkpoint_sha256 == served.checkpoint_sha256 is not None
    text = ["a red circle moves left"]
    with torch.inference_mode():
        a, b = plain.encode_text(text).global_, served.encode_text(text).global_
    assert torch.allclose(a, b, atol=1e-5)  # the traced tower encodes as the eager one


def test_load_model_refuses_a_missing_checkpoint(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        runtime.load_model(HanetSettings(checkpoint=tmp_path / "none.pt"))


def test_the_searcher_answers_nothing_before_the_first_publish(tmp_path, checkpoint) -> None:
    settings = HanetSettings(data_dir=tmp_path, checkpoint=checkpoint)
    searcher = runtime.build_searcher(settings, runtime.load_model(settings, serving=True))
    assert searcher.search("a red circle moves left", top_k=5) == []
    assert searcher.candidates == settings.search_candidates
    assert searcher.concepts is True  # the concept list is on unless turned off
    assert searcher.index.rows_in_memory == 0.5  # rows read in when they fit in half


def test_the_rows_can_be_kept_out_of_memory(tmp_path, checkpoint, monkeypatch) -> None:
    monkeypatch.setenv("HANET_ROWS_IN_MEMORY", "0")
    settings = runtime.load_settings().model_copy(update={"data_dir": tmp_path})
    settings = settings.model_copy(update={"checkpoint": checkpoint})
    searcher = runtime.build_searcher(settings, runtime.load_model(settings, serving=True))
    assert searcher.index.rows_in_memory == 0
    monkeypatch.setenv("HANET_ROWS_IN_MEMORY", "2")
    with pytest.raises(ValidationError, match="rows_in_memory"):
        runtime.load_settings()


def test_the_candidate_depth_and_the_summaries_share_reach_the_searcher(
    tmp_path, checkpoint, monkeypatch
) -> None:
    monkeypatch.setenv("HANET_SEARCH_LIST_DEPTH", "8")
    monkeypatch.setenv("HANET_SEARCH_EXACT", "0")
    monkeypatch.setenv("HANET_SUMMARIES_IN_MEMORY", "0.25")
    settings = runtime.load_settings().model_copy(update={"data_dir": tmp_path})
    settings = settings.model_copy(update={"checkpoint": checkpoint})
    searcher = runtime.build_searcher(settings, runtime.load_model(settings, serving=True))
    assert searcher.depth == Depth(lists=8, exact=0)
    assert searcher.index.summaries_in_memory == 0.25
    fields = HanetSettings.model_fields  # the defaults agree
    assert (fields["search_list_depth"].default, fields["search_exact"].default) == (2, 5)
    assert Depth() == Depth(2, 5)
    monkeypatch.setenv("HANET_SEARCH_LIST_DEPTH", "0")
    with pytest.raises(ValidationError, match="search_list_depth"):
        runtime.load_settings()


def test_the_concept_list_can_be_turned_off(tmp_path, checkpoint, monkeypatch) -> None:
    monkeypatch.setenv("HANET_SEARCH_CONCEPTS", "false")
    settings = runtime.load_settings().model_copy(update={"data_dir": tmp_path})
    settings = settings.model_copy(update={"checkpoint": checkpoint})
    assert runtime.build_searcher(settings, runtime.load_model(settings)).concepts is False


def test_the_piece_length_reaches_the_indexer_and_is_checked(monkeypatch) -> None:
    monkeypatch.setenv("HANET_SEGMENT_PIECE_S", "120")
    assert runtime.load_settings().indexing.segments.piece_s == 120.0
    monkeypatch.delenv("HANET_SEGMENT_PIECE_S")
    assert HanetSettings().indexing.segments.piece_s == 300.0  # the default
    assert HanetSettings(segment_piece_s=0).indexing.segments.piece_s == 0.0  # one pass
    with pytest.raises(ValueError, match="segment_piece_s"):
        HanetSettings(segment_piece_s=10.0)  # not longer than a segment


def test_hardware_decoding_and_the_media_store_reach_the_indexer(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HANET_DECODE_HWACCEL", "none")
    monkeypatch.setenv("HANET_DECODE_DEBLOCK", "false")
    monkeypatch.setenv("HANET_MEDIA_STORE", "database")
    monkeypatch.setenv("HANET_DATA_DIR", str(tmp_path))
    indexing = runtime.load_settings().indexing
    assert indexing.segments.hwaccel == "none" and not indexing.segments.deblock
    assert indexing.media.in_database and indexing.media.cache_dir == tmp_path / "media-cache"
    assert indexing.fetch.download_dir == tmp_path / "media-cache"  # URL downloads: a copy
    monkeypatch.delenv("HANET_DECODE_HWACCEL")
    monkeypatch.delenv("HANET_MEDIA_STORE")
    monkeypatch.delenv("HANET_DECODE_DEBLOCK")
    assert HanetSettings().indexing.segments.hwaccel == "auto"  # the default
    assert HanetSettings().indexing.segments.deblock
    assert HanetSettings(data_dir=tmp_path).indexing.fetch.download_dir == tmp_path / "media"
    with pytest.raises(ValueError, match="decode_hwaccel"):
        HanetSettings(decode_hwaccel="nvdec")
    with pytest.raises(ValueError, match="media_store"):
        HanetSettings(media_store="s3")
