#!/usr/bin/env python3
"""Render the pretraining corpus: music21's scores on several pianos, offline, resumable, reproducible.

The scores are music21's corpus (Bach chorales and keyboard works, Palestrina's masses, Monteverdi's
madrigals, trecento songs, Ryan's Mammoth folk tunes with their chords, quartets and sonatas of Beethoven,
Mozart, Haydn and others), every part on one piano. Each piece is rendered VARIATIONS times, each time
on a piano drawn from SOUNDFONTS x General MIDI programs 0-3 (acoustic grand, bright, electric grand,
honky-tonk), with a seeded tempo, transposition and loudness on top of render_piano_set.py's
humanising (velocity jitter, sustain pedal). Clips are 2 s, 16 kHz, mono 16-bit, named
`{recording}_{k}.wav` like the Kaggle set; at most MAX_CLIPS evenly spaced ones per recording.

Left out, so that every measurement of the pretrained model is on music and a piano it never heard:
  - every score and soundfont of ../shared/spec/RESERVED.md (RESERVED_SCORES, RESERVED_SOUNDFONT here): asked
    for by name, they are refused in one line;
  - every piece of the rendered set (render_piano_set.PIECES): not only its validation and test recordings;
  - TimGM6mb, the unseen piano of the benchmarks (HELD_OUT_SOUNDFONT): refused like a reserved one.

Dependencies: those of render_piano_set.py (its venv), plus `fluidr3mono-gm-soundfont csound-soundfont`:
  apt-get install -y --no-install-recommends fluidsynth fluid-soundfont-gm fluidr3mono-gm-soundfont \\
      csound-soundfont timgm6mb-soundfont
  /tmp/pianoset-venv/bin/python benchmarks/build_corpus.py --out /work/bench/corpus

Killed at any point, the same command goes on where it stopped: a recording counts once its marker in
done/ is written, after its clips. Outputs in --out: clips/*.wav, done/*.json (one per recording),
recordings.csv and manifest.json (the sha256 of every clip's 16-bit samples, and of the whole list).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render_piano_set import CLIP, PEAK, PIECES, SAMPLE_RATE, humanise, score_to_midi, synthesise  # noqa: E402

SEED = 20261207  # recording r is varied from SEED + r
VARIATIONS = 2  # renderings of each piece, each on its own piano
MAX_CLIPS = 48
FIRST_ID = 100000  # recording ids: FIRST_ID + VARIATIONS * piece + variation
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf3/FluidR3Mono_GM.sf3",
              "/usr/share/sounds/sf2/sf_GMbank.sf2")
PROGRAMS = (0, 1, 2, 3)
HELD_OUT_SOUNDFONT = "TimGM6mb"  # the benchmarks' unseen piano

RESERVED_SOUNDFONT = "musescore_general"  # MuseScore General, every form (.sf2, .sf3, -small, -lossless)
RESERVED_SCORES = (  # RESERVED.md's scores: refused, never rendered
    "beethoven/opus18no1/movement2.mxl",  # reserved
    "beethoven/opus59no1/movement3.mxl",  # reserved
    "beethoven/opus59no2/movement2.mxl",  # reserved
    "beethoven/opus59no2/movement3.mxl",  # reserved
    "beethoven/opus59no3/movement3.mxl",  # reserved
    "mozart/k458/movement1.mxl",  # reserved
    "haydn/opus1no1/movement1.mxl",  # reserved
    "haydn/opus74no1/movement4.mxl",  # reserved
    "schumann_robert/opus41no1/movement1.mxl",  # reserved
    "schumann_robert/opus41no1/movement3.mxl",  # reserved
    "schumann_robert/opus41no1/movement4.mxl",  # reserved
    "schumann_robert/opus48no2.mxl",  # reserved
    "beach/prayer_of_a_tired_child.musicxml",  # reserved
)

# Which of the corpus's folders, and every how many of their (sorted) files: ~1,300 pieces. Left out: collections
# in one file (essenFolksong, oneills1850, airdsAirs: an Opus each), roman-numeral analyses (.rntxt), demos.
FOLDERS = {"bach": 1, "palestrina": 4, "ryansMammoth": 4, "monteverdi": 1, "trecento": 1, "beethoven": 1,
           "mozart": 1, "haydn": 1, "schumann_robert": 1, "schumann_clara": 1, "josquin": 1, "chopin": 1,
           "corelli": 1, "cpebach": 1, "handel": 1, "joplin": 1, "schubert": 1, "weber": 1, "verdi": 1,
           "luca": 1, "lusitano": 1, "ciconia": 1, "johnson_j_r": 1, "liliuokalani": 1}
SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn", ".abc", ".mid")


def bank_name(path: str) -> str:
    """A soundfont's own name (its INFO chunk's INAM), so that a renamed copy is known too."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return ""
    at = head.find(b"INAM")
    size = int.from_bytes(head[at + 4:at + 8], "little") if at >= 0 else 0
    return head[at + 8:at + 8 + size].split(b"\0")[0].decode("latin-1") if at >= 0 else ""


def link_chain(path: str) -> list[str]:
    """The names a path goes by: itself and every link on the way to the file (Debian may install the reserved
    soundfont's name as an alternative that points at another soundfont, and a link named piano.sf2 at it)."""
    names, p = [path], Path(path)
    for _ in range(40):
        if not p.is_symlink():
            break
        p = (p.parent / os.readlink(p)).resolve(strict=False) if not Path(os.readlink(p)).is_absolute() \
            else Path(os.readlink(p))
        names.append(str(p))
    return names


def _normal(name: str) -> str:
    return name.lower().replace("-", "_").replace(" ", "_")


def refusal(soundfonts: list[str], pieces: list[str]) -> str | None:
    """The one line that refuses a reserved or held-out soundfont or score, or None. A soundfont is known by
    every name on its chain of links and by its own bank name; a whole work that holds a reserved movement
    is reserved too."""
    for sf in soundfonts:
        names = [_normal(Path(n).name) for n in link_chain(sf)] + [_normal(bank_name(sf))]
        if any(RESERVED_SOUNDFONT in n for n in names):
            return f"{sf} is MuseScore General, reserved for independent checks (RESERVED.md): never rendered here"
        if any(HELD_OUT_SOUNDFONT.lower() in n for n in names):
            return f"{sf} is TimGM6mb, the benchmarks' unseen piano: it stays out of the corpus"
    for piece in pieces:
        whole = piece.rsplit(".", 1)[0] + "/"
        if piece in RESERVED_SCORES or any(r.startswith(whole) for r in RESERVED_SCORES):
            return f"{piece} is reserved for independent checks (RESERVED.md): never rendered here"
    return None


def corpus_pieces() -> list[str]:
    """The default pieces, in a fixed order: FOLDERS' files, less the reserved ones and the rendered set's."""
    import music21.corpus

    paths = sorted(str(p).split("/corpus/", 1)[1] for p in music21.corpus.getCorePaths())
    rendered = {path for path, _, _ in PIECES}
    chosen = []
    for folder, every in FOLDERS.items():
        files = [p for p in paths if p.split("/", 1)[0] == folder and p.endswith(SCORE_SUFFIXES)]
        chosen += [p for p in files[::every] if p not in rendered and refusal([], [p]) is None]
    return chosen


def variation(rid: int, soundfonts: tuple[str, ...]) -> dict:
    """The piano, transposition and tempo of recording `rid`: drawn from its own seed, so any subset of the
    corpus renders the same files."""
    rng = np.random.default_rng(SEED + rid)
    return {"soundfont": soundfonts[int(rng.integers(len(soundfonts)))], "program": int(rng.choice(PROGRAMS)),
            "transpose": int(rng.integers(-3, 4)), "tempo": float(rng.uniform(0.85, 1.15)),
            "humanise_seed": int(rng.integers(2**31))}


def vary(mid, v: dict):
    """render_piano_set's humanising, then the recording's program, transposition and tempo."""
    mid = humanise(mid, np.random.default_rng(v["humanise_seed"]))
    for msg in (m for track in mid.tracks for m in track):
        if msg.type == "program_change":
            msg.program = v["program"]
        elif msg.type in ("note_on", "note_off") and msg.channel != 15:
            msg.note = int(np.clip(msg.note + v["transpose"], 21, 108))
        elif msg.type == "set_tempo":
            msg.tempo = max(1, int(round(msg.tempo / v["tempo"])))
    return mid


def with_chords(score) -> None:
    """Folk tunes carry chord symbols, which MIDI export leaves out: play them as chords an octave down."""
    from music21 import harmony

    symbols = list(score.recurse().getElementsByClass(harmony.ChordSymbol))
    if not symbols:
        return
    harmony.realizeChordSymbolDurations(score)
    for cs in symbols:
        cs.writeAsChord = True
        if cs.pitches and cs.pitches[0].octave is not None and cs.pitches[0].octave >= 4:
            cs.transpose(-12, inPlace=True)


def piece_midi(corpus_path: str, path: Path) -> None:
    """The score as MIDI, once per piece (kept for a resumed build), written atomically."""
    import music21

    tmp = path.with_suffix(".part")
    score = music21.converter.parse(Path(music21.__file__).parent / "corpus" / corpus_path)
    if isinstance(score, music21.stream.Opus):
        raise ValueError("a collection of scores, not one")
    with_chords(score)
    try:
        score.write("midi", fp=tmp)
    except Exception:
        score_to_midi(corpus_path, tmp)  # its fallback drops inconsistent repeat marks
    os.replace(tmp, path)


def kept_windows(n: int) -> list[int]:
    if n <= MAX_CLIPS:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, MAX_CLIPS)})


def render_piece(job: tuple[int, str, tuple[str, ...], Path]) -> list[dict]:
    """One piece: its MIDI once, then each of its VARIATIONS recordings not yet done. Returns their markers;
    a piece that music21 or FluidSynth cannot render is reported by an `error` marker, not retried."""
    import mido
    import soundfile

    index, corpus_path, soundfonts, out = job
    rids = [FIRST_ID + VARIATIONS * index + v for v in range(VARIATIONS)]
    todo = [r for r in rids if not (out / "done" / f"{r}.json").exists()]
    if not todo:
        return []
    midi = out / "midi" / f"{index}.mid"
    markers = []
    try:
        if not midi.exists():
            piece_midi(corpus_path, midi)
        for rid in todo:
            v = variation(rid, soundfonts)
            varied = out / "midi" / f"{rid}.mid"
            vary(mido.MidiFile(midi), v).save(varied)
            x = synthesise(varied, v["soundfont"])
            varied.unlink()
            peak = float(np.abs(x).max())
            if not peak > 0:
                raise ValueError("silent rendering")
            n = len(x) // CLIP
            hashes = {}
            for k in kept_windows(n):
                pcm = np.round(np.clip(x[k * CLIP:(k + 1) * CLIP] * PEAK / peak, -1, 1) * 32767).astype("<i2")
                name = f"{rid}_{k}.wav"
                soundfile.write(out / "clips" / name, pcm, SAMPLE_RATE, subtype="PCM_16")
                hashes[name] = hashlib.sha256(pcm.tobytes()).hexdigest()
            marker = {"recording_id": rid, "corpus_path": corpus_path, "soundfont": Path(v["soundfont"]).name,
                      "program": v["program"], "transpose": v["transpose"], "tempo": round(v["tempo"], 4),
                      "seconds": round(len(x) / SAMPLE_RATE, 2), "n_windows": n, "clips": hashes}
            markers.append(marker)
            write_marker(out / "done" / f"{rid}.json", marker)
    except Exception as e:  # noqa: BLE001 - a score music21 cannot write, or one FluidSynth fails on: counted, skipped
        for rid in todo[len(markers):]:
            marker = {"recording_id": rid, "corpus_path": corpus_path, "error": f"{type(e).__name__}: {e}"[:200]}
            markers.append(marker)
            write_marker(out / "done" / f"{rid}.json", marker)
    return markers


def write_marker(path: Path, marker: dict) -> None:
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(marker))
    os.replace(tmp, path)


def write_manifest(out: Path) -> dict:
    """recordings.csv and manifest.json from the markers; the manifest's own sha256 names the corpus."""
    markers = sorted((json.loads(p.read_text()) for p in (out / "done").glob("*.json")),
                     key=lambda m: m["recording_id"])
    ok = [m for m in markers if "error" not in m]
    fields = ["recording_id", "corpus_path", "soundfont", "program", "transpose", "tempo", "seconds", "n_windows"]
    with open(out / "recordings.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields + ["n_clips"])
        writer.writeheader()
        writer.writerows({k: m[k] for k in fields} | {"n_clips": len(m["clips"])} for m in ok)
    def window(item: tuple[str, str]) -> int:
        return int(item[0][:-4].split("_")[1])

    clips = {name: h for m in ok for name, h in sorted(m["clips"].items(), key=window)}
    digest = hashlib.sha256(json.dumps(clips, sort_keys=True).encode()).hexdigest()
    skipped = [{"recording_id": m["recording_id"], "corpus_path": m["corpus_path"], "error": m["error"]}
               for m in markers if "error" in m]
    manifest = {"sha256": digest, "n_recordings": len(ok), "n_clips": len(clips), "seed": SEED,
                "soundfonts": sorted({m["soundfont"] for m in ok}), "skipped": skipped, "clips": clips}
    tmp = out / "manifest.part"
    tmp.write_text(json.dumps(manifest, indent=0))
    os.replace(tmp, out / "manifest.json")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench/corpus"))
    ap.add_argument("--soundfont", action="append",
                    help=f"a GM soundfont (repeatable; default {', '.join(SOUNDFONTS)})")
    ap.add_argument("--piece", action="append", help="a music21 corpus path (repeatable; default: corpus_pieces())")
    ap.add_argument("--jobs", type=int, default=2, help="pieces rendered at once")
    ap.add_argument("--only", type=int, help="render only the first N pieces (a quick check)")
    args = ap.parse_args()
    soundfonts = tuple(args.soundfont or SOUNDFONTS)
    line = refusal(list(soundfonts), args.piece or [])
    if line:
        sys.exit(f"build_corpus: {line}")
    missing = [sf for sf in soundfonts if not Path(sf).is_file()]
    if missing:
        sys.exit(f"build_corpus: no soundfont at {', '.join(missing)} (apt-get install the packages in --help)")

    started = time.perf_counter()
    for d in ("midi", "clips", "done"):
        (args.out / d).mkdir(parents=True, exist_ok=True)
    pieces = (args.piece or corpus_pieces())[:args.only]
    jobs = [(i, path, soundfonts, args.out) for i, path in enumerate(pieces)]
    done = 0
    # spawn, a few pieces per worker: music21 holds on to memory between parses
    with mp.get_context("spawn").Pool(args.jobs, maxtasksperchild=20) as pool:
        for markers in pool.imap_unordered(render_piece, jobs, chunksize=1):
            done += len(markers)
            if markers and done % 100 < len(markers):
                print(f"{done} recordings rendered this time, {time.perf_counter() - started:.0f} s", flush=True)
    manifest = write_manifest(args.out)
    print(json.dumps({"pieces": len(pieces), "recordings": manifest["n_recordings"], "clips": manifest["n_clips"],
                      "skipped": len(manifest["skipped"]), "manifest_sha256": manifest["sha256"],
                      "seconds": round(time.perf_counter() - started)}))


if __name__ == "__main__":
    main()
