"""The search page in a real headless browser (Debian's Chromium driven by Playwright) against
a real server: the bundled demo model, a few generated videos, the in-process indexer."""

from __future__ import annotations

import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from corpus.synth import generate_corpus
from service.settings import HanetSettings
from tests.conftest import require_executable
from tests.service.live_server import serve

pytestmark = pytest.mark.slow  # every test here drives a browser against a live server

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from db import queue
    from model import file_sha256

    root = tmp_path_factory.mktemp("page")
    generate_corpus(root / "corpus", 4, seed=11, workers=1, progress=False)
    settings = HanetSettings(data_dir=root / "data", media_root=root / "corpus")
    with serve(settings) as (app, url):
        state = app.state.hanet
        for path in sorted((root / "corpus" / "videos").glob("*.mp4")):
            queue.enqueue(
                state.engine, media_path=str(path), sha256=file_sha256(path), title=path.stem
            )
        deadline = time.monotonic() + 120
        while queue.counts(state.engine)["indexed"] < 4 and time.monotonic() < deadline:
            time.sleep(0.1)  # the server's own indexer worker picks them up
        assert queue.counts(state.engine)["indexed"] == 4
        yield {"url": url, "corpus": root / "corpus", "app": app}


@pytest.fixture(scope="module")
def browser():
    chromium = require_executable("chromium", "Debian: apt-get install chromium")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(server["url"] + "/")
    yield pg
    context.close()


# Expressions for wait_for_function are arrow functions: an expression string is run with
# eval, which the page's Content-Security-Policy refuses.


def _search(page, query: str) -> None:
    page.get_by_label("Describe what happens in the video").fill(query)
    page.keyboard.press("Enter")  # the search box submits with Enter
    page.wait_for_function(
        "() => document.getElementById('search-status').textContent.includes('videos for')"
    )


def test_typing_a_query_shows_thumbnails(page) -> None:
    _search(page, "a big red circle moves left")
    cards = page.locator("#results li.hit")
    assert cards.count() == 4
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    first = cards.first
    assert first.locator(".bars .bar").count() == 3  # event, action, entity
    assert first.locator(".chip").count() >= 2  # the demo model's concepts
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "search-results.png"), full_page=True)


def test_clicking_a_hit_plays_from_the_moment(browser, server) -> None:
    context = browser.new_context()
    # as when a browser refuses autoplay: the player must still stand at the moment
    context.add_init_script("HTMLMediaElement.prototype.play = () => Promise.resolve()")
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server["url"] + "/")
    _search(page, "a small blue square grows")
    meta = page.locator("#results li.hit .meta").first.inner_text()
    start = float(meta.split("moment ")[1].split("–")[0])  # "moment 0.25–1.50 s"
    page.locator("#results li.hit button.open").first.click()
    page.wait_for_function("() => document.getElementById('video').readyState >= 1")
    page.wait_for_function(
        f"() => Math.abs(document.getElementById('video').currentTime - {start}) < 0.25"
    )
    assert page.locator("#player").is_visible()
    left = page.eval_on_selector("#moment-bar", "e => parseFloat(e.style.left)")
    duration = page.eval_on_selector("#video", "v => v.duration")
    assert left == pytest.approx(100 * start / duration, abs=0.5)
    context.close()


def test_an_upload_becomes_indexed(page, server) -> None:
    extra = (
        generate_corpus(
            server["corpus"].parent / "extra", 1, seed=12, workers=1, progress=False
        ).parent
        / "videos"
        / "synth000000.mp4"
    )
    page.set_input_files("#files", str(extra))
    line = page.locator("#uploads li[data-file='synth000000.mp4']")
    line.and_(page.locator("[data-status='indexed']")).wait_for(timeout=90_000)
    assert "indexed (video" in line.inner_text()
    page.locator("#library tr", has_text="synth000000.mp4").wait_for()


def test_a_bad_upload_shows_its_reason(page, tmp_path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video\n" * 50)
    page.set_input_files("#files", str(bad))
    line = page.locator("#uploads li[data-file='broken.mp4']")
    line.and_(page.locator("[data-status='failed']")).wait_for(timeout=90_000)
    assert "not a readable media file" in line.inner_text()


def test_the_page_works_on_a_narrow_screen_with_the_keyboard(browser, server) -> None:
    context = browser.new_context(viewport={"width": 380, "height": 800})
    page = context.new_page()
    page.goto(server["url"] + "/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "query"  # first stop: the search box
    _search(page, "a yellow star rotates")
    widths = page.eval_on_selector_all("#results li.hit", "els => els.map(e => e.offsetWidth)")
    assert widths and all(w <= 380 for w in widths)
    assert page.evaluate("document.documentElement.scrollWidth") <= 380  # no sideways scroll
    context.close()


def test_with_an_api_key_the_page_asks_once_and_sends_it(browser, tmp_path) -> None:
    key = "correct horse battery staple"
    settings = HanetSettings(data_dir=tmp_path / "data", api_key=key)
    video = generate_corpus(tmp_path / "c", 1, seed=14, workers=1, progress=False).parent
    video = video / "videos" / "synth000000.mp4"
    with serve(settings) as (_app, url):
        page = browser.new_page()
        page.goto(url + "/")
        page.get_by_label("Describe what happens in the video").fill("a red star moves left")
        page.keyboard.press("Enter")
        page.get_by_text('No videos match "a red star moves left".').wait_for()  # empty index
        page.set_input_files("#files", str(video))
        page.get_by_label("API key", exact=True).fill(key)  # the dialog opened on the first 401
        page.get_by_role("button", name="Use this key").click()
        line = page.locator("#uploads li[data-file='synth000000.mp4']")
        line.and_(page.locator("[data-status='indexed']")).wait_for(timeout=90_000)  # accepted
        row = page.locator("#library tr", has_text="synth000000.mp4")
        row.get_by_role("button").click()
        row.wait_for(state="detached")
        assert not page.locator("#key-dialog").is_visible()  # asked once, not for the delete
        page.close()


# Collects what the page's Content-Security-Policy refused, as the browser reports it.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


def test_the_page_runs_under_its_content_security_policy(browser, server) -> None:
    context = browser.new_context()
    context.add_init_script(RECORD_VIOLATIONS)
    context.add_init_script("HTMLMediaElement.prototype.play = () => Promise.resolve()")
    page = context.new_page()
    page.set_default_timeout(60_000)
    console = []
    page.on("console", lambda m: console.append(m.text))
    response = page.goto(server["url"] + "/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.locator("#library tr").first.wait_for()  # the library listed by the script
    _search(page, "a big red circle moves left")  # score bars, concept chips, thumbnails
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    widths = page.eval_on_selector_all(".bar > span", "els => els.map(e => e.style.width)")
    assert widths and all(w.endswith("%") for w in widths)  # set through the CSSOM, not refused
    page.locator("#results li.hit button.open").first.click()
    page.wait_for_function("() => document.getElementById('video').readyState >= 1")
    assert page.evaluate("window.cspViolations") == []
    assert not [m for m in console if "Content Security Policy" in m]
    # the policy is enforced: a script written into the page does not run, and is reported
    ran = page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.inlineRan = 1'; document.body.append(s);"
        " return window.inlineRan; }"
    )
    assert ran is None
    page.wait_for_function("() => window.cspViolations.length > 0")
    assert page.evaluate("window.cspViolations")[0].startswith("script-src")
    context.close()


MARKUP = '<img src=x onerror="window.pwned=1">'


def test_a_title_with_markup_is_shown_as_text(page, server) -> None:
    folder = server["corpus"] / "markup"
    generate_corpus(folder, 1, seed=13, workers=1, progress=False)
    created = page.request.post(
        server["url"] + "/videos",
        data={"path": "markup/videos/synth000000.mp4", "title": MARKUP},
    )
    assert created.status == 202, created.text()
    video = created.json()
    deadline = time.monotonic() + 90
    while video["status"] not in ("indexed", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
        video = page.request.get(f"{server['url']}/videos/{video['id']}").json()
    assert video["status"] == "indexed" and video["title"] == MARKUP
    page.get_by_role("button", name="Refresh").click()
    row = page.locator(f"#library tr[data-video-id='{video['id']}']")
    row.wait_for()
    assert row.locator("td").nth(1).inner_text() == MARKUP  # the markup, as text
    query = "a small red star moves left"
    while not _found(page, server["url"], query, video["id"]) and time.monotonic() < deadline:
        time.sleep(0.2)  # indexed; searchable once the server's index watcher reads the build
    _search(page, query)
    card = page.locator(f"#results li.hit[data-video-id='{video['id']}']")
    assert card.locator(".title").inner_text().endswith(MARKUP)
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert page.evaluate("typeof window.pwned") == "undefined"


def _found(page, url: str, query: str, video_id: int) -> bool:
    hits = page.request.post(url + "/search", data={"query": query, "top_k": 100}).json()["hits"]
    return any(h["video_id"] == video_id for h in hits)


def test_a_private_library_asks_for_the_key_then_shows_its_media(browser, tmp_path) -> None:
    """With reads protected, the page asks for the key on its first read, trades it for the
    media cookie, and the thumbnails and the player load (they cannot send the key)."""
    from db import queue
    from model import file_sha256

    key = "private library key 42"
    settings = HanetSettings(data_dir=tmp_path / "data", api_key=key, protect_reads=True)
    video = generate_corpus(tmp_path / "c", 1, seed=15, workers=1, progress=False).parent
    video = video / "videos" / "synth000000.mp4"
    with serve(settings) as (app, url):
        engine = app.state.hanet.engine
        queue.enqueue(engine, media_path=str(video), sha256=file_sha256(video), title="private")
        deadline = time.monotonic() + 120
        while queue.counts(engine)["indexed"] < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        context = browser.new_context()
        context.add_init_script("HTMLMediaElement.prototype.play = () => Promise.resolve()")
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(url + "/")
        page.get_by_label("API key", exact=True).fill(key)  # asked for at the library's 401
        page.get_by_role("button", name="Use this key").click()
        page.locator("#library tr", has_text="private").wait_for()
        _search(page, "a red star moves left")
        page.wait_for_function(
            "() => { const imgs = [...document.querySelectorAll('#results img')];"
            " return imgs.length && imgs.every(i => i.complete && i.naturalWidth > 0); }"
        )
        page.locator("#results li.hit button.open").first.click()
        page.wait_for_function("() => document.getElementById('video').readyState >= 1")
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["hanet_media"]["httpOnly"] and key not in cookies["hanet_media"]["value"]
        assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
        context.close()


SCRIPTED = {
    "page.html": "<html><body><script>alert('html ran'); document.title = 'pwned'</script>",
    "image.svg": '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(\'svg ran\')">'
    "<script>alert('svg script ran')</script></svg>",
}


def test_scripts_in_uploaded_files_never_run(browser, server, tmp_path) -> None:
    """HTML and SVG holding scripts: refused at upload through the page (nothing to open), and
    rows of such files from before uploads were probed are not served: opening their file URLs
    runs nothing, nor does a real video stored under an .html name."""
    from db import queue
    from model import file_sha256

    context = browser.new_context()
    dialogs: list[str] = []
    context.on("page", lambda p: p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss())))
    page = context.new_page()
    page.goto(server["url"] + "/")
    for name, text in SCRIPTED.items():
        path = tmp_path / name
        path.write_text(text)
        page.set_input_files("#files", str(path))
        line = page.locator(f"#uploads li[data-file='{name}']")
        line.and_(page.locator("[data-status='failed']")).wait_for(timeout=60_000)
        assert "not a video" in line.inner_text()
    engine = server["app"].state.hanet.engine
    video = generate_corpus(tmp_path / "c", 1, seed=16, workers=1, progress=False).parent
    video = video / "videos" / "synth000000.mp4"  # content the library does not hold yet
    disguised = tmp_path / "video.html"
    disguised.write_bytes(video.read_bytes())
    opened = {}
    for path in [tmp_path / name for name in SCRIPTED] + [disguised]:
        video_id, _ = queue.enqueue(engine, media_path=str(path), sha256=file_sha256(path))
        response = page.goto(f"{server['url']}/videos/{video_id}/file")
        opened[path.name] = (response.status, response.headers["content-type"])
        page.wait_for_timeout(300)  # a script would have run by now
        assert page.title() != "pwned"
    assert opened["page.html"][0] == 404 and opened["image.svg"][0] == 404
    assert opened["video.html"] == (200, "video/mp4")
    assert dialogs == []
    context.close()


# ---- long videos: a hit's moments as marks on its timeline ----

# Records each play() call's currentTime instead of playing (headless: no autoplay to wait on).
RECORD_PLAYS = """
window.plays = [];
HTMLMediaElement.prototype.play = function () {
  window.plays.push(this.currentTime); return Promise.resolve(); };
"""


@pytest.fixture(scope="module")
def long_server(tmp_path_factory):
    """A server whose library holds a 30 s video (two shots: a 25 s one with a long still
    stretch, then an empty one) indexed as several short segments, and one short video."""
    from corpus.long import plan_long_corpus, render_segments, write_mp4
    from db import queue
    from model import file_sha256

    root = tmp_path_factory.mktemp("long")
    long = root / "long.mp4"
    write_mp4(
        long, render_segments(plan_long_corpus(1, seed=21, min_minutes=0.5, max_minutes=0.5)[0])
    )
    short = generate_corpus(root / "c", 1, seed=22, workers=1, progress=False).parent
    short = short / "videos" / "synth000000.mp4"
    settings = HanetSettings(
        data_dir=root / "data",
        segment_min_s=1.0,
        segment_max_s=6.0,
        segment_window_s=3.0,
        segment_overlap_s=0.0,
    )
    with serve(settings) as (app, url):
        engine = app.state.hanet.engine
        ids = {}
        for name, path in (("long", long), ("short", short)):
            ids[name], _ = queue.enqueue(
                engine, media_path=str(path), sha256=file_sha256(path), title=name
            )
        deadline = time.monotonic() + 120
        while queue.counts(engine)["indexed"] < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert queue.counts(engine)["indexed"] == 2
        yield {"url": url, "ids": ids}


def _search_and_read(page, query: str, group: str = "video") -> dict:
    """Search from the page (grouping by ``group``); the response body the page got."""
    page.select_option("#group-by", group)
    page.get_by_label("Describe what happens in the video").fill(query)
    with page.expect_response("**/search") as answer:
        page.keyboard.press("Enter")
    noun = "moments" if group == "moment" else "videos"
    page.wait_for_function(
        f"() => document.getElementById('search-status').textContent.includes('{noun} for')"
    )
    return answer.value.json()


def test_a_long_videos_moments_are_marks_that_play_from_their_start(browser, long_server):
    video = long_server["ids"]["long"]
    context = browser.new_context()
    context.add_init_script(RECORD_PLAYS)
    page = context.new_page()
    page.set_default_timeout(60_000)
    shown = page.request.get(f"{long_server['url']}/videos/{video}").json()
    assert shown["segments"] >= 3 and shown["progress"] == 1.0
    page.goto(long_server["url"] + "/")
    body = _search_and_read(page, "a red circle moves left")
    hit = next(h for h in body["hits"] if h["video_id"] == video)
    assert hit["duration_s"] == pytest.approx(30.0, abs=0.2)
    moments = hit["moments"]
    assert len(moments) == 3  # the default per hit: three of its segments
    assert moments[0]["start_s"] == hit["moment"]["start_s"]
    card = page.locator(f"#results li.hit[data-video-id='{video}']")
    marks = card.locator(".marks button.mark")
    assert marks.count() == 3
    lefts = marks.evaluate_all("els => els.map(e => parseFloat(e.style.left))")
    assert lefts == pytest.approx(
        [100 * m["start_s"] / hit["duration_s"] for m in moments], abs=0.01
    )
    thumbnail = card.locator("img").get_attribute("src")
    assert thumbnail.endswith(f"?t={moments[0]['start_s']:.1f}")  # the best moment's frame
    # keyboard: the marks follow the card's play button in tab order, best first
    card.locator("button.open").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.classList.contains('best')")
    page.keyboard.press("Tab")
    second = moments[1]
    label = page.evaluate("document.activeElement.getAttribute('aria-label')")
    assert f"from {_fixed(second['start_s'])} s to {_fixed(second['end_s'])} s" in label
    page.keyboard.press("Enter")
    _wait_at(page, second["start_s"])
    assert page.locator("#player").is_visible()
    assert page.locator("#player-title").inner_text() == "long"
    assert page.evaluate("window.plays") == [pytest.approx(second["start_s"], abs=0.25)]
    third = moments[2]  # the video already loaded: the player only moves
    marks.nth(2).click()
    _wait_at(page, third["start_s"])
    plays = page.evaluate("window.plays")
    assert len(plays) == 2 and plays[1] == pytest.approx(third["start_s"], abs=0.25)
    assert f"{_fixed(third['start_s'])} s to {_fixed(third['end_s'])} s" in page.inner_text(
        "#moment-text"
    )
    context.close()


def _fixed(seconds: float) -> str:
    """``seconds.toFixed(2)`` as the page writes it: a tie rounds up (Python's format rounds
    11.625 to 11.62, JavaScript to 11.63)."""
    return str(Decimal(seconds).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _wait_at(page, start_s: float) -> None:
    page.wait_for_function("() => document.getElementById('video').readyState >= 1")
    page.wait_for_function(
        f"() => Math.abs(document.getElementById('video').currentTime - {start_s}) < 0.25"
    )


def test_grouping_by_moment_lists_a_video_once_per_moment(browser, long_server) -> None:
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(long_server["url"] + "/")
    with page.expect_request("**/search") as asked:
        body = _search_and_read(page, "a blue square grows", group="moment")
    assert asked.value.post_data_json["group_by"] == "moment"
    video = long_server["ids"]["long"]
    theirs = [h for h in body["hits"] if h["video_id"] == video]
    assert len(theirs) >= 2  # several of its segments, each a hit of its own
    cards = page.locator(f"#results li.hit[data-video-id='{video}']")
    assert cards.count() == len(theirs)
    for i, hit in enumerate(theirs):
        mark = cards.nth(i).locator(".marks button.mark")
        assert mark.count() == 1
        assert float(mark.get_attribute("data-start-s")) == hit["moments"][0]["start_s"]
    # back to videos: the same query again, one card per video
    with page.expect_request("**/search") as asked:
        page.select_option("#group-by", "video")
    assert asked.value.post_data_json["group_by"] == "video"
    page.wait_for_function(
        "() => document.getElementById('search-status').textContent.includes('videos for')"
    )
    assert page.locator(f"#results li.hit[data-video-id='{video}']").count() == 1
    page.close()


def test_the_library_shows_how_far_a_video_is_indexed(browser, tmp_path) -> None:
    """A video the indexer has read 12 s of 30 s into shows as processing 40%."""
    from db import queue
    from model import file_sha256

    video = generate_corpus(tmp_path / "c", 1, seed=23, workers=1, progress=False).parent
    video = video / "videos" / "synth000000.mp4"
    with serve(HanetSettings(data_dir=tmp_path / "data"), with_indexer=False) as (app, url):
        engine = app.state.hanet.engine
        video_id, _ = queue.enqueue(engine, media_path=str(video), sha256=file_sha256(video))
        assert [c.video_id for c in queue.claim(engine, worker="test", limit=1)] == [video_id]
        assert queue.progress(engine, video_id, worker="test", indexed_s=12.0, duration_s=30.0)
        page = browser.new_page()
        page.goto(url + "/")
        cell = page.locator(f"#library tr[data-video-id='{video_id}'] td").nth(2)
        cell.wait_for()
        assert cell.inner_text() == "processing 40%"
        page.close()


def test_filters_more_results_and_more_like_this(page, server) -> None:
    import httpx

    items = httpx.get(server["url"] + "/videos").json()["items"]
    ids = [v["id"] for v in items if v["status"] == "indexed"]  # earlier tests may add some
    tagged = ids[-1]
    assert httpx.patch(f"{server['url']}/videos/{tagged}", json={"tags": ["garden"]}).is_success
    page.get_by_text("Filters").click()
    page.get_by_label("Has all tags").fill("garden")
    _search(page, "a big red circle moves left")
    cards = page.locator("#results li.hit")
    assert cards.count() == 1 and cards.first.get_attribute("data-video-id") == str(tagged)
    assert page.locator("#more").is_hidden()
    page.get_by_label("Has all tags").fill("")
    page.get_by_label("per page").fill("3")
    _search(page, "a big red circle moves left")
    assert cards.count() == 3 and page.locator("#more").is_visible()
    while page.locator("#more").is_visible():
        before = cards.count()
        page.locator("#more").click()
        page.wait_for_function(
            f"() => document.querySelectorAll('#results li.hit').length > {before}"
        )
    shown = [cards.nth(i).get_attribute("data-video-id") for i in range(cards.count())]
    assert sorted(shown) == sorted(map(str, ids))  # each video once, over the pages
    source = shown[0]
    cards.first.get_by_role("button", name="More like").click()
    page.wait_for_function(
        "() => document.getElementById('search-status').textContent.includes('more like')"
    )
    page.wait_for_function("() => document.querySelectorAll('#results li.hit').length === 3")
    assert source not in [cards.nth(i).get_attribute("data-video-id") for i in range(3)]


def test_search_with_an_image(page, server) -> None:
    import io

    import httpx
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    page.set_input_files(
        "#image-query", files=[{"name": "x.png", "mimeType": "image/png", "buffer": png.getvalue()}]
    )
    page.wait_for_function(
        "() => document.getElementById('search-status').textContent.includes('the image x.png')"
    )
    items = httpx.get(server["url"] + "/videos").json()["items"]
    indexed = sum(v["status"] == "indexed" for v in items)  # earlier tests may add some
    assert page.locator("#results li.hit").count() == min(indexed, 12)
    assert page.locator("#more").is_hidden()


def test_why_shows_the_phrases_and_their_frames(page, server) -> None:
    _search(page, "a big red circle moves left")
    card = page.locator("#results li.hit").first
    why = card.get_by_role("button", name="Why")
    assert why.get_attribute("aria-expanded") == "false"
    why.click()
    reasons = card.locator(".why-list li")
    page.wait_for_function(
        "() => document.querySelector('#results li.hit .why-list li').textContent.startsWith('“')"
    )
    texts = [reasons.nth(i).text_content() for i in range(reasons.count())]
    assert any("moves" in t and "(action" in t and "key segment" in t for t in texts), texts
    assert any("circle" in t and "(entity" in t for t in texts), texts
    assert all("frames at" in t and " s (" in t for t in texts)
    assert why.get_attribute("aria-expanded") == "true"
    why.click()  # and closed again
    assert card.locator(".why-list").is_hidden()
