"""Public datasets (offline): downloads from a local HTTP server, verification, resume, safe
extraction, and the POP909 / MAESTRO / Lakh sources and MusicCaps prompts built on them."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from src.data.downloads import (
    ChecksumError,
    DownloadError,
    RemoteFile,
    UnsafeArchiveError,
    fetch,
    safe_extract,
)
from src.data.lakh_source import LakhConfig, LakhSource
from src.data.maestro_source import MaestroConfig, MaestroSource
from src.data.musiccaps import controls_for, read_prompts
from src.data.pop909_source import POP909Config, main_key, pack_local_copy, parse_key
from src.data.prepare import DataConfig, prepare
from src.utils.io import read_jsonl
from tests.conftest import SHARED
from tests.helpers import melody, run05, score_of
from tests.http_server import FileServer

POP909 = SHARED / "datasets" / "POP909"
MUSICCAPS_CSV = SHARED / "datasets" / "musiccaps" / "musiccaps-public.csv"
needs_pop909 = pytest.mark.skipif(not POP909.is_dir(), reason=f"local POP909 copy absent ({POP909})")
needs_musiccaps = pytest.mark.skipif(
    not MUSICCAPS_CSV.is_file(), reason=f"local MusicCaps table absent ({MUSICCAPS_CSV})"
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    with FileServer(root) as server:
        yield server


def put(server: FileServer, name: str, data: bytes) -> RemoteFile:
    (server.root / name).write_bytes(data)
    return RemoteFile(url=f"{server.url}/{name}")


# ------------------------------------------------------------------ downloads
def test_download_records_checksum_then_skips(served, tmp_path):
    data = bytes(range(256)) * 1000
    remote = put(served, "blob.bin", data)
    path = fetch(remote, tmp_path)
    assert path.read_bytes() == data
    rec = json.loads((tmp_path / "checksums.json").read_text())["blob.bin"]
    assert rec["sha256"] == hashlib.sha256(data).hexdigest() and rec["size"] == len(data)
    n = len(served.requests)
    assert fetch(remote, tmp_path) == path and len(served.requests) == n  # present and valid: no request


def test_interrupted_download_resumes(served, tmp_path):
    data = hashlib.sha256(b"x").digest() * 40_000  # 1.28 MB
    remote = put(served, "big.bin", data)
    served.cut_after, served.cuts_left = 300_000, 1
    with pytest.raises(DownloadError, match="interrupted at 300000 bytes.*rerun to resume"):
        fetch(remote, tmp_path, retries=0)
    assert (tmp_path / "big.bin.part").stat().st_size == 300_000 and not (tmp_path / "big.bin").exists()
    path = fetch(remote, tmp_path)  # the rerun resumes from the .part
    assert served.requests[-1] == ("/big.bin", "bytes=300000-")
    assert path.read_bytes() == data and not (tmp_path / "big.bin.part").exists()
    # within one call: cut twice, resumed by the retries
    served.cut_after, served.cuts_left = 100_000, 2
    other = tmp_path / "again"
    assert fetch(remote, other, retries=3).read_bytes() == data
    assert [r for _, r in served.requests[-3:]] == ["", "bytes=100000-", "bytes=200000-"]


def test_checksum_mismatch_is_an_error_and_the_file_is_not_used(served, tmp_path):
    remote = put(served, "c.bin", b"published content")
    bad = RemoteFile(url=remote.url, sha256="0" * 64)
    with pytest.raises(ChecksumError, match="sha256 .* expected 0000"):
        fetch(bad, tmp_path)
    assert not list(tmp_path.glob("c.bin*"))
    # recorded on the first download: a later, different copy is refused
    fetch(remote, tmp_path / "rec")
    (tmp_path / "rec" / "c.bin").unlink()
    (served.root / "c.bin").write_bytes(b"tampered content!")
    with pytest.raises(ChecksumError, match="recorded on first download"):
        fetch(remote, tmp_path / "rec")
    assert not (tmp_path / "rec" / "c.bin").exists()


def test_unreachable_names_the_url_and_the_mirror_option(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    remote = RemoteFile(url=f"http://127.0.0.1:{port}/data.zip")
    with pytest.raises(DownloadError, match=rf"127.0.0.1:{port}/data.zip.*--mirror DIR_OR_URL"):
        fetch(remote, tmp_path)
    with pytest.raises(DownloadError, match="HTTP 404.*--mirror"), FileServer(tmp_path) as server:
        fetch(RemoteFile(url=f"{server.url}/missing.zip"), tmp_path / "d")


def test_mirror_folder_and_url(served, tmp_path):
    remote = RemoteFile(url="https://example.invalid/pub/file.bin", sha256=hashlib.sha256(b"abc").hexdigest())
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "file.bin").write_bytes(b"abc")
    assert fetch(remote, tmp_path / "a", mirror=str(mirror)).read_bytes() == b"abc"
    (served.root / "file.bin").write_bytes(b"abc")
    assert fetch(remote, tmp_path / "b", mirror=served.url).read_bytes() == b"abc"
    with pytest.raises(DownloadError, match="--mirror .* not found"):
        fetch(remote, tmp_path / "c", mirror=str(tmp_path / "empty"))


# ------------------------------------------------------------------ extraction
def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for m in members:
            tf.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 1) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname, m.size = kind, link, size if kind == tarfile.REGTYPE else 0
    return m


@pytest.mark.parametrize(
    "make",
    [
        lambda p: _zip(p / "a.zip", {"ok/readme.txt": b"fine", "../evil.txt": b"owned"}),
        lambda p: _zip(p / "b.zip", {"/abs/evil.txt": b"owned"}),
        lambda p: _tar(p / "c.tar.gz", [_info("ok/a.txt"), _info("ok/../../evil.txt")]),
        lambda p: _tar(p / "d.tar.gz", [_info("ok/link", tarfile.SYMTYPE, "../../etc/passwd")]),
        lambda p: _tar(p / "e.tar.gz", [_info("ok/link", tarfile.SYMTYPE, "/etc/passwd")]),
        lambda p: _tar(p / "f.tar.gz", [_info("ok/hard", tarfile.LNKTYPE, "../outside")]),
        lambda p: _tar(p / "g.tar.gz", [_info("ok/dev", tarfile.CHRTYPE)]),
    ],
    ids=["zip-dotdot", "zip-absolute", "tar-dotdot", "tar-symlink-up", "tar-symlink-abs", "tar-hardlink", "tar-device"],
)
def test_unsafe_archive_is_refused_and_nothing_extracted(tmp_path, make):
    archive = make(tmp_path)
    target = tmp_path / "work" / "extracted"
    with pytest.raises(UnsafeArchiveError, match="nothing extracted"):
        safe_extract(archive, target)
    assert not target.exists() and not (tmp_path / "evil.txt").exists() and not (tmp_path / "work").exists()


def test_safe_extract_is_all_or_nothing_and_skips_when_done(tmp_path):
    archive = _zip(tmp_path / "ok.zip", {"top/a.txt": b"a", "top/sub/b.txt": b"b"})
    target = safe_extract(archive, tmp_path / "x")
    assert (target / "top/sub/b.txt").read_bytes() == b"b"
    stamp = (target / ".extracted.json").stat().st_mtime_ns
    assert safe_extract(archive, target) == target and (target / ".extracted.json").stat().st_mtime_ns == stamp
    truncated = tmp_path / "cut.zip"
    truncated.write_bytes(archive.read_bytes()[:-30])
    with pytest.raises(DownloadError, match="cut.zip"):
        safe_extract(truncated, tmp_path / "y")
    assert not (tmp_path / "y").exists()


# ------------------------------------------------------------------ sources
@needs_pop909
@pytest.mark.parametrize("songs", [40, pytest.param(0, marks=pytest.mark.slow, id="all")])
def test_pop909_download_and_prepare(served, tmp_path, songs):
    """The whole archive is served and extracted; ``songs`` of it prepared (0 = all 909: slow, ~40 s)."""
    archive = pack_local_copy(POP909, served.root)
    cfg = DataConfig(preset="pop909", raw_dir=str(tmp_path / "raw"), processed_dir=str(tmp_path / "proc"), workers=2)
    cfg.music21.enabled = False
    cfg.pop909 = POP909Config(enabled=True, max_files=songs)
    cfg.pop909.archive = RemoteFile(url=f"{served.url}/{archive.name}")
    cfg.audio.enabled = cfg.preference.enabled = False
    summary = prepare(cfg)
    rows = read_jsonl(tmp_path / "proc" / "manifest.jsonl")
    want = songs or 909
    assert len(rows) == summary["pieces"] == want and summary["key_annotated"] == want
    assert {r["source"] for r in rows} == {"pop909"} and {r["style"] for r in rows} == {"POP"}
    for r in rows:
        song = r["id"].split("/")[1]
        tonic, mode = main_key(POP909 / song / "key_audio.txt")
        assert (r["key_tonic"], r["mode"], r["key_source"]) == (tonic, mode, "annotation"), r["id"]
    assert summary["by_source_style"]["pop909 / POP"]["pieces"] == len(rows)
    assert summary["by_source_style"]["pop909 / POP"]["tokens"] == sum(r["n_tokens"] for r in rows)
    assert "pop909 / POP: pieces, tokens" in (tmp_path / "proc" / "summary.md").read_text()
    n = len(served.requests)
    prepare(cfg)  # rerun: the archive is present and valid, nothing is downloaded again
    assert len(served.requests) == n


def test_pop909_key_annotation_parsing(tmp_path):
    assert parse_key("Gb:maj") == (6, "major") and parse_key("C#:min") == (1, "minor")
    f = tmp_path / "key_audio.txt"
    f.write_text("0.0\t10.0\tC:maj\n10.0\t50.0\tA:min\n50.0\t60.0\tC:maj\n")
    assert main_key(f) == (9, "minor")
    f.write_text("0.0 10.0 H:maj\n")
    with pytest.raises(ValueError, match="unknown key"):
        main_key(f)


def _some_midis(n: int) -> list[bytes]:
    if POP909.is_dir():
        return [(POP909 / f"{i:03d}" / f"{i:03d}.mid").read_bytes() for i in range(1, n + 1)]
    pitches = [[60 + (k * (i + 2)) % 12 for k in range(32)] for i in range(n)]
    return [score_of(melody(p, 240, 200), time_signature=None, velocity=80).dumps_midi() for p in pitches]


def test_maestro_official_split(served, tmp_path):
    midis = _some_midis(3)
    files = ["2004/perf_a.midi", "2006/perf_b.midi", "2008/perf_c.midi"]
    _zip(served.root / "maestro-v3.0.0-midi.zip", {f"maestro-v3.0.0/{f}": m for f, m in zip(files, midis)})
    columns = {
        "canonical_composer": {"0": "Bach", "1": "Chopin", "2": "Chopin"},
        "canonical_title": {"0": "Prelude", "1": "Ballade", "2": "Ballade"},
        "split": {"0": "train", "1": "test", "2": "test"},
        "year": {"0": 2004, "1": 2006, "2": 2008},
        "midi_filename": {str(i): f for i, f in enumerate(files)},
    }
    (served.root / "maestro-v3.0.0.json").write_text(json.dumps(columns))
    cfg = MaestroConfig(enabled=True)
    cfg.archive = RemoteFile(url=f"{served.url}/maestro-v3.0.0-midi.zip")
    cfg.metadata = RemoteFile(url=f"{served.url}/maestro-v3.0.0.json")
    pieces, rejected = MaestroSource(cfg).collect(tmp_path, 1)
    assert [p.meta["split"] for p in pieces] == ["train", "test", "test"] and not rejected
    assert {p.style for p in pieces} == {"CLASSICAL"} and pieces[1].group == pieces[2].group
    assert all(p.meta["tempo_marked"] is False for p in pieces)
    # the pinned checksum of the real archive refuses this crafted one
    with pytest.raises(ChecksumError):
        MaestroSource(MaestroConfig(enabled=True), mirror=served.url).collect(tmp_path / "pinned", 1)


def test_lakh_genres_through_match_scores_and_tagtraum(served, tmp_path):
    a, b, c = _some_midis(3)
    members = [("clean_midi/Abba/Dancing Queen.mid", a), ("clean_midi/Abba/Dancing Queen.1.mid", b),
               ("clean_midi/Metallica/One.mid", c)]  # fmt: skip
    with tarfile.open(served.root / "clean_midi.tar.gz", "w:gz") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    md5 = [hashlib.md5(d).hexdigest() for d in (a, b, c)]
    scores = {"TRAAA": {md5[0]: 0.9, md5[1]: 0.4}, "TRBBB": {md5[1]: 0.8}, "TRCCC": {md5[2]: 0.95}}
    (served.root / "match_scores.json").write_text(json.dumps(scores))
    cls = "# tagtraum genre annotations\n# comment\nTRAAA\tPop\nTRBBB\tElectronic\nTRCCC\tMetal\n"
    _zip(served.root / "msd_tagtraum_cd2c.cls.zip", {"msd_tagtraum_cd2c.cls": cls.encode()})
    cfg = LakhConfig(enabled=True)
    cfg.archive, cfg.match_scores, cfg.tagtraum = (
        RemoteFile(url=f"{served.url}/{n}")
        for n in ("clean_midi.tar.gz", "match_scores.json", "msd_tagtraum_cd2c.cls.zip")
    )
    pieces, _ = LakhSource(cfg).collect(tmp_path, 1)
    by = {p.meta["title"]: p for p in pieces}
    assert by["Abba - Dancing Queen"].style == "POP"
    assert by["Abba - Dancing Queen.1"].style == "ELECTRONIC"  # its best match is TRBBB (0.8 > 0.4)
    assert by["Metallica - One"].style is None and by["Metallica - One"].meta["genre"] == "Metal"  # unmapped
    assert by["Abba - Dancing Queen"].group == by["Abba - Dancing Queen.1"].group  # versions: one split
    with pytest.raises(ValueError, match="genre_map.Metal"):
        LakhConfig(genre_map={"Metal": "ROCK"})


# ------------------------------------------------------------------ MusicCaps prompts
@needs_musiccaps
def test_musiccaps_prompts_and_controls():
    rows = read_prompts(MUSICCAPS_CSV)
    assert len(rows) == 5521 and all(r.caption for r in rows)
    assert len(read_prompts(MUSICCAPS_CSV, limit=7)) == 7
    second = rows[1]  # "... The mood of this song is relaxing ... country ... slow tempo"
    c = controls_for(second, "POP", "HAPPY", {})
    assert (c.style, c.emotion, c.tempo) == ("FOLK", "PEACEFUL", 72.0), c.evidence
    assert "electric guitar" in c.instruments and c.evidence["tempo"] == "slow tempo"


def test_prompts_csv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m src.data.fetch musiccaps"):
        read_prompts(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("ytid,text\nabc,hello\n")
    with pytest.raises(ValueError, match="no 'caption' column"):
        read_prompts(bad)


@needs_musiccaps
def test_generate_from_prompts_csv(tmp_path, micro_checkpoint):

    out = tmp_path / "out"
    args = ["--symbolic_ckpt", str(micro_checkpoint), "--prompts_csv", str(MUSICCAPS_CSV), "--limit", "2",
            "--output_dir", str(out), "--output_name", "mc", "--skip_neural_render",
            "--bars_per_section", "2"]  # fmt: skip
    assert run05(args) == 0
    listing = json.loads((out / "mc_prompts.json").read_text())
    assert [r["row"] for r in listing["rows"]] == [1, 2] and listing["summary"]["prompts"] == 2
    for r in listing["rows"]:
        meta = json.loads((out / f"{r['name']}.json").read_text())
        assert meta["settings"]["prompt"] == r["caption"]
        assert (meta["settings"]["style"], meta["settings"]["emotion"]) == (r["style"], r["emotion"])
        assert meta["settings"]["tempo"] == r["tempo"] and (out / f"{r['name']}.mid").is_file()


@needs_musiccaps
def test_fetch_cli_from_a_mirror_folder(tmp_path, capsys):
    from src.data.fetch import main

    assert main(["musiccaps", "--raw_dir", str(tmp_path), "--mirror", str(MUSICCAPS_CSV.parent)]) == 0
    got = tmp_path / "musiccaps" / "musiccaps-public.csv"
    assert got.read_bytes() == MUSICCAPS_CSV.read_bytes() and str(got) in capsys.readouterr().out
    assert "musiccaps-public.csv" in json.loads((tmp_path / "musiccaps" / "checksums.json").read_text())


def test_prepare_cli_names_the_url_and_mirror_when_unreachable(tmp_path, caplog):
    from src.data.prepare import main

    url = "http://127.0.0.1:9/POP909.zip"  # the discard port: nothing listens
    args = ["--no_music21", "--set", "pop909.enabled=true", "--set", f"pop909.archive.url={url}",
            "--set", f"raw_dir={tmp_path}/raw", "--set", f"processed_dir={tmp_path}/p"]  # fmt: skip
    assert main(args) == 2
    assert url in caplog.text and "--mirror DIR_OR_URL" in caplog.text
    assert not list((tmp_path / "raw").rglob("*.zip"))
