"""The live demo (src.demo): its API on a micro checkpoint, and the page driven in headless Chromium."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from src.demo.app import DemoApp
from src.demo.browser import chromium, fill, missing, wait_for
from src.demo.server import make_server
from src.generation.config import GenerationConfig
from src.generation.request import song_request
from src.utils.config import load_config
from tests.helpers import run05

NEURAL = ["neural.steps=3", "neural.griffin_lim_iters=4", "neural.overlap_frames=8"]


def micro_generation_config(ckpt: Path, renderer: Path | str) -> GenerationConfig:
    return load_config(
        GenerationConfig,
        "config/generation.yaml",
        [f"checkpoints=[{ckpt}]", f"renderer_checkpoint={renderer}", *NEURAL],
    )


class Served:
    """A DemoApp behind a real HTTP server on 127.0.0.1 (any free port), in a thread."""

    def __init__(self, app: DemoApp):
        self.app, self.server = app, make_server(app, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def post(self, fields: dict) -> tuple[int, dict]:
        req = urllib.request.Request(
            self.url + "/api/generate", json.dumps(fields).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def wait(self, job_id: str, timeout: float = 120) -> dict:
        end = time.time() + timeout
        while time.time() < end:
            status = json.loads(self.get(f"/api/jobs/{job_id}")[1])
            if status["state"] in ("done", "failed"):
                return status
            time.sleep(0.1)
        raise TimeoutError(job_id)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.app.close()


@pytest.fixture(scope="module")
def served(micro_checkpoint, micro_renderer, tmp_path_factory):
    app = DemoApp(micro_generation_config(micro_checkpoint, micro_renderer), tmp_path_factory.mktemp("demo"))
    s = Served(app)
    yield s
    s.close()


SONG = {
    "prompt": "a gentle air for flute",
    "style": "FOLK",
    "emotion": "PEACEFUL",
    "tempo": "90",
    "key": "",
    "form": "a,b",
    "bars_per_section": "2",
    "temperature": "0.9",
    "top_p": "0.95",
    "guidance": "1",
    "seed": "5",
    "renderer": "fluidsynth",
}


def test_demo_song_is_stage_5s_song(served, micro_checkpoint, tmp_path):
    code, body = served.post(SONG)
    assert code == 202, body
    status = served.wait(body["id"])
    assert status["state"] == "done", status
    code, midi = served.get(status["files"]["mid"])
    assert code == 200
    args = ["--symbolic_ckpt", str(micro_checkpoint), "--skip_neural_render", "--output_dir", str(tmp_path)]
    for k in ("prompt", "style", "emotion", "tempo", "form", "bars_per_section", "temperature", "top_p", "seed"):
        args += [f"--{k}", SONG[k]]
    args += ["--guidance", SONG["guidance"], "--output_name", "cli"]
    assert run05(args) == 0
    assert midi == (tmp_path / "cli.mid").read_bytes()
    result = status["result"]
    assert result["checkpoint"]["path"] == str(micro_checkpoint)
    assert result["renderer"].startswith("fluidsynth") and "FluidSynth asked for" in result["renderer_reason"]
    assert result["facts"]["bars"] == 4 and result["facts"]["tempo"] == 90
    code, wav = served.get(status["files"]["wav"] + "?download=1")
    assert code == 200 and wav[:4] == b"RIFF"
    ranged = urllib.request.Request(served.url + status["files"]["wav"], headers={"Range": "bytes=4-11"})
    with urllib.request.urlopen(ranged, timeout=30) as r:  # the audio player seeks with ranges
        assert r.status == 206 and r.read() == wav[4:12]
        assert r.headers["Content-Range"] == f"bytes 4-11/{len(wav)}"


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("tempo", "400", "outside 30-300"),
        ("tempo", "fast", "not a number"),
        ("key", "H minor", "cannot read"),
        ("form", "a,,b", "invalid entry"),
        ("form", "a:64,b:64,c:64", "at most 128"),
        ("bars_per_section", "0", "outside 1-64"),
        ("temperature", "0", "must be > 0"),
        ("seed", "1.5", "not a whole number"),
        ("style", "POLKA", "unknown style"),
        ("renderer", "organ", "choose neural or fluidsynth"),
        ("time_signature", "7/8", "is not one of"),
        ("time_signature", "5/4", "never seen 5/4; it knows 4/4"),
    ],
)
def test_bad_field_is_named_and_the_server_keeps_serving(served, field, value, says):
    code, body = served.post({**SONG, field: value})
    assert code == 400 and body["field"] == field and says in body["error"], body
    assert served.get("/api/info")[0] == 200


def test_two_clients_get_their_own_songs_one_at_a_time(served):
    replies: list = [None, None]

    def ask(i: int) -> None:
        replies[i] = served.post({**SONG, "seed": str(20 + i)})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [body["id"] for code, body in replies]
    assert all(code == 202 for code, _ in replies) and ids[0] != ids[1]
    done = [served.wait(i) for i in ids]
    assert [d["result"]["seed"] for d in done] == [20, 21]
    assert done[0]["files"]["mid"] != done[1]["files"]["mid"]
    a, b = (served.app.jobs[i] for i in ids)
    first, second = sorted((a, b), key=lambda j: j.started)
    assert first.finished <= second.started  # one song at a time


def test_progress_counts_bars_planned_then_segments_rendered(served, tmp_path):
    req = song_request(served.app.cfg, style="FOLK", tempo=90, form="a,b", bars_per_section=2)
    calls: list[tuple[str, int, int]] = []
    served.app.maker.make(req, "p", tmp_path, neural=True, progress=lambda *c: calls.append(c))
    plan = [c for c in calls if c[0] == "plan"]
    render = [c for c in calls if c[0] == "render"]
    assert calls == plan + render and plan[-1][1] == plan[-1][2] and plan[-1][2] % 4 == 0  # 4 bars an attempt
    assert [d for _, d, _ in plan] == sorted(d for _, d, _ in plan)  # a re-sample counts on, never back
    assert render[-1][1] == render[-1][2] >= 2


def test_instruments_and_metre_are_shown_as_typed(served):
    code, body = served.get("/api/words?prompt=" + urllib.request.quote("a jig for fiddle and flute, then a fiddle"))
    words = json.loads(body)
    assert code == 200 and words["metre"] == {"word": "jig", "time_signature": "6/8"}
    assert [(f["word"], f["name"]) for f in words["instruments"]] == [("fiddle", "Violin"), ("flute", "Flute")]


def test_only_finished_songs_files_are_served(served):
    for path in ("/files/0123456789ab/x.mid", "/files/../../etc/passwd", "/static/..", "/api/jobs/nope"):
        assert served.get(path)[0] == 404


def test_old_songs_are_deleted(micro_checkpoint, tmp_path):
    app = DemoApp(micro_generation_config(micro_checkpoint, tmp_path / "none.pt"), tmp_path / "out", max_age_s=60)
    try:
        job = app.submit({**SONG, "form": "a", "bars_per_section": "1"})
        while app.status(job.id)["state"] not in ("done", "failed"):
            time.sleep(0.05)
        assert app.file(job.id, f"{job.stem}.mid") is not None
        assert app.cleanup(time.time() + 30) == []
        assert app.cleanup(time.time() + 61) == [job.id]
        assert not (tmp_path / "out" / job.id).exists() and app.status(job.id) is None
    finally:
        app.close()


def test_missing_checkpoint_names_the_command(tmp_path):
    cfg = load_config(GenerationConfig, "config/generation.yaml", [f"checkpoints=[{tmp_path}/no.pt]"])
    app = DemoApp(cfg, tmp_path / "out")
    try:
        info = app.info()
        assert "python 02_train_symbolic.py --config config/symbolic_tiny.yaml" in info["problem"]
        with pytest.raises(RuntimeError, match="02_train_symbolic"):
            app.submit(SONG)
    finally:
        app.close()


# ---------------------------------------------------------------------------------------- the page in a browser
@pytest.fixture
def browser(tmp_path):
    if missing():
        pytest.fail(f"{', '.join(missing())} missing: `bash setup.sh --dev` installs chromium and chromium-driver")
    driver = chromium(tmp_path / "profile", tmp_path / "downloads")
    driver.downloads = tmp_path / "downloads"
    yield driver
    driver.quit()


def test_page_in_headless_chromium(served, browser, tmp_path):
    from selenium.webdriver.support.ui import Select
    from symusic import Score

    from src.music.notes import bar_ticks

    browser.get(served.url)
    wait_for(browser, "return document.body.dataset.ready === '1'", 30)
    assert "supervised checkpoint" in browser.find_element("id", "loaded").text
    fill(browser, "prompt", "a gentle air for flute")
    wait_for(browser, "return document.getElementById('instruments').textContent.includes('Flute')", 10)
    Select(browser.find_element("id", "style")).select_by_value("FOLK")
    Select(browser.find_element("id", "emotion")).select_by_value("PEACEFUL")
    fill(browser, "tempo", "90")
    fill(browser, "key", "")
    fill(browser, "form", "a,b")
    fill(browser, "bars_per_section", "2")
    assert browser.find_element("id", "renderer-neural").is_selected()  # the micro renderer is loaded
    browser.find_element("id", "generate").click()
    wait_for(browser, "return !!document.getElementById('audio').dataset.ready")
    audio = browser.execute_script(
        "const a = document.getElementById('audio');"
        "return {duration: a.duration, ready: a.readyState, error: a.error, src: a.currentSrc};"
    )
    meta = json.loads(served.get(browser.find_element("id", "dl-json").get_attribute("href").split(served.url)[1])[1])
    assert audio["error"] is None and audio["ready"] >= 1 and audio["src"].endswith(".wav")
    assert meta["renderer"].startswith("neural")
    assert abs(audio["duration"] - meta["audio_seconds"]) < 0.05
    assert abs(meta["audio_seconds"] - (meta["facts"]["duration_s"] + 1.0)) < 0.1  # 4 bars at 90 BPM + tail
    facts = browser.find_element("id", "facts").text
    assert "tempo 90 BPM" in facts and "bars 4 in a:2, b:2" in facts
    assert "supervised checkpoint" in browser.find_element("id", "made-by").text

    browser.find_element("id", "dl-mid").click()
    end = time.time() + 20
    while not list(browser.downloads.glob("*.mid")) and time.time() < end:
        time.sleep(0.1)
    (mid,) = browser.downloads.glob("*.mid")
    score = Score(str(mid))
    assert score.tempos[0].qpm == pytest.approx(90.0, abs=0.01)
    end_marker = max(m.time for m in score.markers if m.text == "end")
    assert end_marker / bar_ticks(score.ticks_per_quarter, "4/4") == 4
    assert "folk, peaceful, 90" in browser.find_element("id", "history").text

    fill(browser, "tempo", "400")
    browser.find_element("id", "generate").click()
    wait_for(browser, "return document.getElementById('err-tempo').textContent.length > 0", 10)
    assert "outside 30-300" in browser.find_element("id", "err-tempo").text
    assert browser.find_element("id", "err-form").text == ""
    assert browser.save_screenshot(str(tmp_path / "demo.png"))
    assert (tmp_path / "demo.png").stat().st_size > 10_000


def test_page_needs_no_internet():
    """No font, script or style from another host: the page works offline."""
    static = Path("src/demo/static")
    for f in static.iterdir():
        text = f.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f"{f} refers to another host"
    assert {f.name for f in static.iterdir()} == {"index.html", "app.js", "app.css"}
