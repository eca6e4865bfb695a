#!/usr/bin/env python3
"""Render the piano clip set of benchmarks/bench_quality.py from public-domain scores, offline.

The real recordings cannot be downloaded on the machines this project is built on, so the quality
benchmark uses a stand-in: scores bundled with music21 (Beethoven quartets, Mozart, Haydn, Schumann,
Joplin, Chopin, Bach, ...), every part on General MIDI program 0 (acoustic grand piano), humanised
with a fixed seed per recording (tempo, velocities, a sustain pedal on every beat), rendered by
FluidSynth at 16 kHz and cut into consecutive 2.0 s mono 16-bit clips named `{recording}_{k}.wav`,
the Kaggle set's layout. Long movements keep at most 160 evenly spaced clips, so a few of them do
not dominate. 45 recordings, 5,044 clips (FluidR3 GM), ~320 MB. A model that is good here is not
yet proven on real recordings; one that is bad here is bad.

Dependencies (this script does not import beetnet_utils, so it runs in its own small venv):
  apt-get install -y --no-install-recommends fluidsynth fluid-soundfont-gm timgm6mb-soundfont
  python3 -m venv /tmp/pianoset-venv
  /tmp/pianoset-venv/bin/pip install music21==10.5.1 mido numpy soundfile

The two sets of the README's table (about 4 minutes each on 2 cores):
  /tmp/pianoset-venv/bin/python benchmarks/render_piano_set.py --out /work/bench/pianoset
  /tmp/pianoset-venv/bin/python benchmarks/render_piano_set.py --out /work/bench/pianoset-timgm \\
      --soundfont /usr/share/sounds/sf2/TimGM6mb.sf2
A quick check of the first three pieces: add `--only 3`.

Outputs in --out: clips/*.wav, midi/*.mid (the humanised scores), recordings.csv (one row per
recording: id, piece, corpus path, seconds, 2 s windows, clips kept) and manifest.json (the sha256
of each clip's 16-bit samples). The same pieces, seeds and soundfont give the same files.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import multiprocessing as mp
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
CLIP = 2 * SAMPLE_RATE
MAX_CLIPS = 160
SEED = 20240611  # recording r is humanised from SEED + r
GAIN = 0.35  # FluidSynth's master gain: low enough that dense chords do not clip before normalisation
PEAK = 0.9  # each recording is normalised to this peak, like a mastered file
FLUIDR3 = "/usr/share/sounds/sf2/FluidR3_GM.sf2"

# (music21 corpus path, short name, recording id); the ids leave gaps where a movement was dropped
PIECES = [
    ("beethoven/opus18no1/movement1.mxl", "beet_op18n1_m1", 7001),
    ("beethoven/opus18no1/movement3.mxl", "beet_op18n1_m3", 7003),
    ("beethoven/opus18no1/movement4.mxl", "beet_op18n1_m4", 7004),
    ("beethoven/opus59no1/movement1.mxl", "beet_op59n1_m1", 7005),
    ("beethoven/opus59no1/movement2.mxl", "beet_op59n1_m2", 7006),
    ("beethoven/opus59no1/movement4.mxl", "beet_op59n1_m4", 7008),
    ("beethoven/opus59no2/movement1.mxl", "beet_op59n2_m1", 7009),
    ("beethoven/opus59no2/movement4.mxl", "beet_op59n2_m4", 7012),
    ("beethoven/opus59no3/movement1.mxl", "beet_op59n3_m1", 7013),
    ("beethoven/opus59no3/movement2.mxl", "beet_op59n3_m2", 7014),
    ("beethoven/opus59no3/movement4.mxl", "beet_op59n3_m4", 7016),
    ("mozart/k155/movement1.mxl", "moz_k155_m1", 7017),
    ("mozart/k155/movement2.mxl", "moz_k155_m2", 7018),
    ("mozart/k155/movement3.mxl", "moz_k155_m3", 7019),
    ("mozart/k156/movement1.mxl", "moz_k156_m1", 7020),
    ("mozart/k156/movement2.mxl", "moz_k156_m2", 7021),
    ("mozart/k156/movement3.mxl", "moz_k156_m3", 7022),
    ("mozart/k156/movement4.mxl", "moz_k156_m4", 7023),
    ("mozart/k458/movement2.mxl", "moz_k458_m2", 7025),
    ("mozart/k458/movement3.mxl", "moz_k458_m3", 7026),
    ("mozart/k458/movement4.mxl", "moz_k458_m4", 7027),
    ("mozart/k80/movement1.mxl", "moz_k80_m1", 7028),
    ("mozart/k80/movement2.mxl", "moz_k80_m2", 7029),
    ("mozart/k80/movement3.mxl", "moz_k80_m3", 7030),
    ("mozart/k80/movement4.mxl", "moz_k80_m4", 7031),
    ("mozart/k545/movement1_exposition.mxl", "moz_k545_m1", 7032),
    ("haydn/opus1no1/movement2.mxl", "haydn_op1n1_m2", 7034),
    ("haydn/opus1no1/movement3.mxl", "haydn_op1n1_m3", 7035),
    ("haydn/opus1no1/movement4.mxl", "haydn_op1n1_m4", 7036),
    ("haydn/opus1no1/movement5.mxl", "haydn_op1n1_m5", 7037),
    ("haydn/opus74no1/movement1.mxl", "haydn_op74n1_m1", 7038),
    ("haydn/opus74no1/movement2.mxl", "haydn_op74n1_m2", 7039),
    ("haydn/opus74no1/movement3.mxl", "haydn_op74n1_m3", 7040),
    ("schumann_clara/polonaise_op1n1.mxl", "cschu_pol1", 7042),
    ("schumann_clara/polonaise_op1n2.mxl", "cschu_pol2", 7043),
    ("schumann_clara/polonaise_op1n3.mxl", "cschu_pol3", 7044),
    ("schumann_clara/polonaise_op1n4.mxl", "cschu_pol4", 7045),
    ("schumann_clara/opus17/movement3.xml", "cschu_op17_m3", 7046),
    ("schumann_robert/opus41no1/movement2.mxl", "rschu_op41n1_m2", 7048),
    ("schumann_robert/opus41no1/movement5.mxl", "rschu_op41n1_m5", 7051),
    ("joplin/maple_leaf_rag.mxl", "joplin_maple", 7053),
    ("chopin/mazurka06-2.krn", "chopin_maz6_2", 7054),
    ("bach/bwv846.mxl", "bach_bwv846", 7055),
    ("cpebach/h186.mxl", "cpebach_h186", 7056),
    ("schubert/Lindenbaum.xml", "schubert_lindenbaum", 7058),
]


def score_to_midi(corpus_path: str, path: Path) -> None:
    """The score as plain MIDI, repeats expanded; a few scores have inconsistent repeat marks, so
    there the repeats are dropped instead."""
    import music21
    from music21 import bar, repeat

    score = music21.converter.parse(Path(music21.__file__).parent / "corpus" / corpus_path)
    try:
        score.write("midi", fp=path)
    except Exception:
        for m in score.recurse().getElementsByClass("Measure"):
            if isinstance(m.leftBarline, bar.Repeat):
                m.leftBarline = None
            if isinstance(m.rightBarline, bar.Repeat):
                m.rightBarline = None
        for r in list(score.recurse().getElementsByClass(repeat.RepeatExpression)):
            r.activeSite.remove(r)
        score.write("midi", fp=path)


def humanise(mid, rng: np.random.Generator):
    """Every part on the piano, played by a person: one tempo factor and one loudness per recording,
    each note's velocity jittered, a sustain pedal pressed just after each beat and lifted before the
    next. Channel 9 (GM percussion) moves to 15. The order of the draws is part of the data set."""
    import mido

    tempo = float(rng.uniform(0.92, 1.08))
    loudness = float(rng.uniform(0.8, 1.1))
    channels = set()
    for msg in (m for track in mid.tracks for m in track):
        if msg.type == "set_tempo":
            msg.tempo = max(1, int(round(msg.tempo / tempo)))
        elif msg.type == "program_change":
            msg.program = 0
        elif msg.type == "note_on" and msg.velocity > 0:
            msg.velocity = int(np.clip(round(msg.velocity * loudness + rng.normal(0, 7)), 20, 120))
        if hasattr(msg, "channel"):
            if msg.channel == 9:
                msg.channel = 15
            channels.add(msg.channel)
    channels = sorted(channels) or [0]

    beat, end = mid.ticks_per_beat, max(sum(m.time for m in track) for track in mid.tracks)
    events = [(0, mido.Message("program_change", channel=c, program=0)) for c in channels]
    for t in range(0, end, beat):
        for c in channels:
            events.append((t + beat // 10, mido.Message("control_change", channel=c, control=64, value=100)))
            events.append((t + beat * 19 // 20, mido.Message("control_change", channel=c, control=64, value=0)))
    events.sort(key=lambda e: e[0])  # stable: simultaneous events keep their order
    pedal, last = mido.MidiTrack(), 0
    for at, msg in events:
        pedal.append(msg.copy(time=at - last))
        last = at
    mid.tracks.append(pedal)
    if not any(m.type == "set_tempo" for track in mid.tracks for m in track):  # MIDI's default is 120 bpm
        mid.tracks[0].insert(0, mido.MetaMessage("set_tempo", tempo=int(500000 / tempo), time=0))
    return mid


def synthesise(midi: Path, soundfont: str) -> np.ndarray:
    """FluidSynth's offline render at 16 kHz, down-mixed to mono float32."""
    import soundfile

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "render.wav"
        subprocess.run(["fluidsynth", "-ni", "-q", "-g", str(GAIN), "-r", str(SAMPLE_RATE), "-T", "wav",
                        "-O", "float", "-o", "synth.cpu-cores=1", "-F", str(wav), soundfont, str(midi)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        x, sr = soundfile.read(wav, dtype="float32", always_2d=True)
    if sr != SAMPLE_RATE:
        raise RuntimeError(f"fluidsynth wrote {sr} Hz, not {SAMPLE_RATE}")
    return x.mean(axis=1).astype(np.float32)


def kept_windows(n: int) -> list[int]:
    """Every 2 s window, or MAX_CLIPS evenly spaced ones; the window's index stays in the clip's name."""
    if n <= MAX_CLIPS:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, MAX_CLIPS)})


def render_piece(job: tuple[str, str, int, str, Path]) -> tuple[dict, dict[str, str]]:
    """One recording: score -> humanised MIDI -> audio -> clips. Returns its csv row and {clip: sha256}."""
    import mido
    import soundfile

    corpus_path, name, rid, soundfont, out = job
    midi = out / "midi" / f"{rid}_{name}.mid"
    score_to_midi(corpus_path, midi.with_suffix(".raw.mid"))
    humanise(mido.MidiFile(midi.with_suffix(".raw.mid")), np.random.default_rng(SEED + rid)).save(midi)
    midi.with_suffix(".raw.mid").unlink()

    x = synthesise(midi, soundfont)
    peak = float(np.abs(x).max())
    scale = PEAK / peak if peak > 0 else 1.0
    n = len(x) // CLIP
    hashes = {}
    for k in kept_windows(n):
        pcm = np.round(np.clip(x[k * CLIP:(k + 1) * CLIP] * scale, -1, 1) * 32767).astype("<i2")
        soundfile.write(out / "clips" / f"{rid}_{k}.wav", pcm, SAMPLE_RATE, subtype="PCM_16")
        hashes[f"{rid}_{k}.wav"] = hashlib.sha256(pcm.tobytes()).hexdigest()
    row = {"recording_id": rid, "piece": name, "corpus_path": corpus_path, "seconds": round(len(x) / SAMPLE_RATE, 2),
           "n_windows": n, "n_clips": len(hashes)}
    return row, hashes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench/pianoset"))
    ap.add_argument("--soundfont", default=FLUIDR3, help="a General MIDI .sf2/.sf3 soundfont")
    ap.add_argument("--jobs", type=int, default=2, help="pieces rendered at once")
    ap.add_argument("--only", type=int, help="render only the first N pieces (a quick check)")
    args = ap.parse_args()
    started = time.perf_counter()
    for d in ("midi", "clips"):
        (args.out / d).mkdir(parents=True, exist_ok=True)

    jobs = [(path, name, rid, args.soundfont, args.out) for path, name, rid in PIECES[:args.only]]
    # spawn, one piece per worker process: music21 holds on to memory between parses
    with mp.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
        results = pool.map(render_piece, jobs, chunksize=1)

    rows = sorted((row for row, _ in results), key=lambda r: r["recording_id"])
    manifest = {clip: h for row, hashes in sorted(results, key=lambda r: r[0]["recording_id"])
                for clip, h in hashes.items()}
    with open(args.out / "recordings.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (args.out / "manifest.json").write_text(json.dumps({"n_clips": len(manifest), "clips": manifest}))
    seconds = round(time.perf_counter() - started)
    print(json.dumps({"recordings": len(rows), "clips": len(manifest), "seconds": seconds}))


if __name__ == "__main__":
    main()
