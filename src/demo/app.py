"""The demo's state: one :class:`SongMaker` loaded once, a queue of jobs, one worker, old files deleted.

Songs are made one at a time, in the order they were asked for (two cores cannot make two faster
than one after the other); every browser gets its own job, its own folder and its own files.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.generation.config import GenerationConfig
from src.generation.demos import demo_requests
from src.generation.request import TEMPO_RANGE, song_request
from src.generation.run import SongMaker
from src.generation.song import RequestError, SongRequest
from src.music.instruments import instrument_name, instruments_in_prompt
from src.music.theory import PITCH_CLASSES, key_name
from src.music.vocab import EMOTIONS, STYLES, TIME_SIGNATURES, metre_in_prompt

log = logging.getLogger("demo")
FIELDS = {  # page field -> type (the request's keyword unless said otherwise)
    "prompt": str,
    "style": str,
    "emotion": str,
    "tempo": float,
    "key": str,
    "time_signature": str,
    "form": str,
    "bars_per_section": int,
    "temperature": float,
    "top_p": float,
    "guidance": float,
    "seed": int,
}
MAX_PROMPT = 500


@dataclass
class Job:
    id: str
    request: SongRequest
    neural: bool
    stem: str
    created: float = field(default_factory=time.time)
    state: str = "queued"  # queued | running | done | failed
    stage: str = ""  # plan | render
    done: int = 0
    total: int = 0
    started: float = 0.0
    finished: float = 0.0
    error: str = ""
    result: dict[str, Any] = field(default_factory=dict)

    def progress(self, stage: str, done: int, total: int) -> None:
        self.stage, self.done, self.total = stage, done, total


def parse_fields(raw: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The page's fields as typed request arguments, and whether the neural renderer is asked for."""
    unknown = sorted(set(raw) - set(FIELDS) - {"renderer"})
    if unknown:
        raise RequestError(unknown[0], "is not a field of this page")
    args: dict[str, Any] = {}
    for name, kind in FIELDS.items():
        value = raw.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if name == "tempo":
                args[name] = None  # the emotion's default
            continue
        if kind is str:
            args[name] = str(value)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise RequestError(name, f"{value!r} is not a number") from None
        if kind is int and number != int(number):
            raise RequestError(name, f"{value!r} is not a whole number")
        args[name] = kind(number)
    if len(args.get("prompt", "")) > MAX_PROMPT:
        raise RequestError("prompt", f"at most {MAX_PROMPT} characters")
    renderer = raw.get("renderer", "neural")
    if renderer not in ("neural", "fluidsynth"):
        raise RequestError("renderer", f"{renderer!r}: choose neural or fluidsynth")
    return args, renderer == "neural"


class DemoApp:
    """Jobs in, songs out; thread-safe. ``problem`` is set (and nothing can be made) without a checkpoint."""

    def __init__(
        self,
        cfg: GenerationConfig,
        out_dir: Path,
        max_age_s: float = 3600.0,
        max_bars: int = 128,
        max_waiting: int = 16,
        symbolic_ckpt: str | None = None,
        renderer_ckpt: str | None = None,
    ):
        self.cfg, self.out_dir = cfg, Path(out_dir)
        self.max_age_s, self.max_bars, self.max_waiting = max_age_s, max_bars, max_waiting
        self.maker: SongMaker | None = None
        self.problem = ""
        try:
            self.maker = SongMaker(cfg, symbolic_ckpt, renderer_ckpt)
            self.maker.embed(["warm up"])  # load the prompt encoder now, not on the first click
        except (FileNotFoundError, ValueError) as e:
            self.problem = str(e)
            log.error("%s", e)
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.queue: queue.Queue[Job] = queue.Queue()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name="demo-worker", daemon=True),
            threading.Thread(target=self._sweep, name="demo-cleanup", daemon=True),
        ]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ what the page shows
    def info(self) -> dict[str, Any]:
        m = self.maker.generator if self.maker else None
        known = m.known_styles if m else []
        fields = ("prompt", "style", "emotion", "tempo", "form", "key")
        examples = [{k: getattr(req, k) for k in fields} for _, req in demo_requests(known, self.cfg.sampling)]
        return {
            "problem": self.problem,
            "checkpoint": self.maker.checkpoint if self.maker else None,
            "neural": {
                "available": bool(self.maker and self.maker.neural),
                "name": self.maker.neural_name if self.maker else "",
                "reason": self.maker.neural_reason if self.maker else "",
            },
            "styles": list(STYLES),
            "known_styles": known,
            "emotions": list(EMOTIONS),
            "keys": [key_name(t, mode) for mode in ("major", "minor") for t in range(len(PITCH_CLASSES))],
            "time_signatures": [t for t in TIME_SIGNATURES if m and t in m.time_signatures],
            "default_forms": self.cfg.default_forms,
            "default_tempo": self.cfg.default_tempo,
            "sampling": {k: getattr(self.cfg.sampling, k) for k in ("temperature", "top_p", "guidance")},
            "tempo_range": list(TEMPO_RANGE),
            "max_bars": self.max_bars,
            "examples": examples,
            "songs_at_once": 1,
            "max_age_s": self.max_age_s,
        }

    def prompt_words(self, prompt: str) -> dict[str, Any]:
        """What stage 5 reads from a prompt's words: the instruments (and whether the checkpoint has seen
        them) and a metre."""
        named = instruments_in_prompt(prompt)
        unseen = set(self.maker.generator.unseen([p for _, p in named])) if self.maker else set()
        metre = metre_in_prompt(prompt)
        return {
            "instruments": [
                {"word": w, "program": p, "name": instrument_name(p), "seen": p not in unseen} for w, p in named
            ],
            "metre": {"word": metre[0], "time_signature": metre[1]} if metre else None,
        }

    # ------------------------------------------------------------------ jobs
    def submit(self, raw: dict[str, Any]) -> Job:
        """Check the fields (a RequestError names the bad one) and queue the song."""
        if self.maker is None:
            raise RuntimeError(self.problem)
        args, neural = parse_fields(raw)
        req = song_request(self.cfg, max_bars=self.max_bars, **args)
        self.maker.generator.check(req)
        with self.lock:
            waiting = sum(j.state == "queued" for j in self.jobs.values())
            if waiting >= self.max_waiting:
                raise OverflowError(f"{waiting} songs are waiting; try again in a minute")
            job_id = secrets.token_hex(6)
            stem = f"{(req.style or 'song').lower()}_{req.emotion.lower()}_seed{req.seed}"
            job = Job(job_id, req, neural, stem)
            self.jobs[job_id] = job
        self.queue.put(job)
        log.info("job %s queued: %s", job_id, json.dumps(raw, sort_keys=True))
        return job

    def status(self, job_id: str) -> dict[str, Any] | None:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            ahead = sum(j.state == "queued" and j.created < job.created for j in self.jobs.values())
            running = any(j.state == "running" for j in self.jobs.values())
        out = {
            "id": job.id,
            "state": job.state,
            "ahead": ahead + (running if job.state == "queued" else 0),
            "stage": job.stage,
            "done": job.done,
            "total": job.total,
            "error": job.error,
            "seconds": round((job.finished or time.time()) - (job.started or time.time()), 2),
        }
        if job.state == "done":
            out["result"] = job.result
            out["files"] = {ext: f"/files/{job.id}/{job.stem}.{ext}" for ext in ("mid", "wav", "json", "png")}
        return out

    def file(self, job_id: str, name: str) -> Path | None:
        """A generated file of a finished job, or None (unknown job, other name, deleted)."""
        if not re.fullmatch(r"[0-9a-f]{12}", job_id) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            return None
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None or job.state != "done" or not name.startswith(job.stem + "."):
            return None
        path = self.out_dir / job_id / name
        return path if path.is_file() else None

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            job.state, job.started = "running", time.time()
            try:
                paths = self.maker.make(job.request, job.stem, self.out_dir / job.id, job.neural, job.progress)
                job.result = json.loads(paths[2].read_text())
                job.state = "done"
                log.info("job %s done in %.1f s", job.id, time.time() - job.started)
            except Exception as e:  # the page shows it; the server keeps serving
                job.state, job.error = "failed", f"{type(e).__name__}: {e}"
                log.exception("job %s failed", job.id)
            finally:
                job.finished = time.time()

    # ------------------------------------------------------------------ cleanup
    def cleanup(self, now: float | None = None) -> list[str]:
        """Delete the folders of songs older than ``max_age_s`` (and forget their jobs); returns their ids."""
        now = time.time() if now is None else now
        gone = []
        with self.lock:
            active = {j.id for j in self.jobs.values() if j.state in ("queued", "running")}
            for d in sorted(self.out_dir.iterdir()):
                if d.is_dir() and d.name not in active and now - d.stat().st_mtime > self.max_age_s:
                    shutil.rmtree(d)
                    self.jobs.pop(d.name, None)
                    gone.append(d.name)
            for j in [j for j in self.jobs.values() if j.finished and now - j.finished > self.max_age_s]:
                del self.jobs[j.id]  # failed jobs (no folder)
        if gone:
            log.info("deleted %d songs older than %.0f s", len(gone), self.max_age_s)
        return gone

    def _sweep(self) -> None:
        while not self._stop.wait(min(60.0, max(self.max_age_s / 4, 1.0))):
            self.cleanup()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
