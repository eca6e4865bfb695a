"""The embedded demo data: public-domain Beethoven themes on a small additive piano model.

No download, no system package, deterministic. Each note is a sum of stretched
(inharmonic) partials from two slightly detuned strings, with a hammer-noise attack,
a two-stage decay that is faster for higher partials and higher notes, brightness that
grows with velocity, damper release, and a sustain pedal that holds notes to the next
bar line. One table per (pitch, dynamic layer) is rendered once per recording and
mixed, so a few minutes of audio take about a second.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Event = tuple[float, float, int, float]  # (start beat, length in beats, MIDI pitch, velocity 0..1)


def _line(start: float, notes: list[tuple[int | None, float]], vel: float = 0.7) -> list[Event]:
    """Consecutive notes; `None` is a rest."""
    out, t = [], start
    for pitch, beats in notes:
        if pitch is not None:
            out.append((t, beats, pitch, vel))
        t += beats
    return out


def _chord(start: float, beats: float, pitches: list[int], vel: float = 0.5) -> list[Event]:
    return [(start, beats, p, vel) for p in pitches]


def fur_elise() -> tuple[list[Event], float, float]:
    """A minor, in sixteenths (beat = eighth note)."""
    E5, Ds5, B4, D5, C5, A4, C4, E4, Gs4 = 76, 75, 71, 74, 72, 69, 60, 64, 68
    h = 0.5
    turn = [(E5, h), (Ds5, h), (E5, h), (Ds5, h), (E5, h), (B4, h), (D5, h), (C5, h)]
    ev = _line(0, turn + [(A4, 1), (None, h), (C4, h), (E4, h), (A4, h), (B4, 1), (None, h), (E4, h),
                          (Gs4, h), (B4, h), (C5, 1), (None, h), (E4, h)], 0.6)
    ev += _line(12, turn + [(A4, 1), (None, h), (C4, h), (E4, h), (A4, h), (B4, 1), (None, h), (E4, h),
                            (C5, h), (B4, h), (A4, 2)], 0.6)
    for t0, root in [(4, 45), (7, 40), (10, 45), (16, 45), (19, 40), (22, 45)]:
        third = root + (7 if root == 45 else 8)
        ev += _line(t0, [(root, h), (root + 7, h), (root + 12 if root == 45 else third + 4, h)], 0.45)
    return ev, 24.0, 3.0


def moonlight() -> tuple[list[Event], float, float]:
    """C-sharp minor, triplet arpeggios over octave bass, melody entering in bar 5."""
    t3 = 1 / 3
    bars = [  # (arpeggio triple, bass root) per half bar
        ([56, 61, 64], 37), ([56, 61, 64], 37), ([56, 61, 64], 35), ([56, 61, 64], 35),
        ([57, 61, 64], 33), ([57, 61, 64], 33), ([57, 62, 66], 30), ([57, 62, 66], 30),
        ([56, 60, 66], 32), ([56, 61, 64], 32), ([56, 61, 63], 32), ([54, 60, 63], 32),
    ]
    ev: list[Event] = []
    for rep in range(2):
        base = rep * 12
        for i, (arp, bass) in enumerate(bars):
            t = base + i * 2
            for j in range(2):
                ev += _line(t + j, [(arp[0], t3), (arp[1], t3), (arp[2], t3)], 0.35)
            ev += _chord(t, 2, [bass, bass + 12], 0.45)
    ev += _line(12, [(None, 3), (68, 0.75), (68, 0.25), (68, 2), (69, 0.75), (68, 0.25),
                     (66, 2), (73, 2), (68, 4)], 0.7)
    return ev, 24.0, 2.0


def pathetique() -> tuple[list[Event], float, float]:
    """A-flat major Adagio cantabile: a singing line over a murmuring inner voice."""
    mel = [(72, 1.5), (70, 0.5), (75, 1), (73, 1), (72, 1), (73, 0.5), (72, 0.5), (68, 1), (70, 1),
           (72, 1), (73, 1), (75, 1.5), (73, 0.5), (72, 2), (70, 2)]
    ev = _line(0, mel, 0.7)
    harmony = [(44, [60, 63]), (44, [61, 65]), (49, [61, 65]), (44, [60, 63]),
               (39, [61, 67]), (44, [60, 63]), (39, [61, 67]), (44, [60, 63])]
    for i, (bass, inner) in enumerate(harmony):
        t = i * 2
        ev += _chord(t, 2, [bass, bass + 12], 0.45)
        ev += _line(t, [(inner[k % 2], 0.25) for k in range(8)], 0.3)
    return ev, 16.0, 2.0


def ode_to_joy() -> tuple[list[Event], float, float]:
    """D major, the Ninth's hymn with block chords."""
    Fs, G, A, E, D = 66, 67, 69, 64, 62
    phrase1 = [(Fs, 1), (Fs, 1), (G, 1), (A, 1), (A, 1), (G, 1), (Fs, 1), (E, 1),
               (D, 1), (D, 1), (E, 1), (Fs, 1)]
    ev = _line(0, phrase1 + [(Fs, 1.5), (E, 0.5), (E, 2)], 0.65)
    ev += _line(16, phrase1 + [(E, 1.5), (D, 0.5), (D, 2)], 0.65)
    chords = [[50, 57], [45, 52], [50, 57], [45, 55], [50, 57], [45, 52], [50, 57], [45, 57, 62]]
    for i, c in enumerate(chords):
        for b in range(4):
            ev += _chord(i * 4 + b, 1, c, 0.4 if b else 0.5)
    return ev, 32.0, 4.0


def fifth_symphony() -> tuple[list[Event], float, float]:
    """C minor: the four-note motif, sequenced and answered by octave basses."""
    ev: list[Event] = []
    cells = [(67, 63), (65, 62), (68, 67), (75, 72), (70, 67), (68, 65)]
    for i, (rep, land) in enumerate(cells):
        t = i * 4
        ev += _line(t, [(None, 0.5), (rep, 0.5), (rep, 0.5), (rep, 0.5), (land, 2)], 0.85)
        ev += _line(t, [(None, 0.5), (rep - 12, 0.5), (rep - 12, 0.5), (rep - 12, 0.5), (land - 24, 2)], 0.75)
    return ev, 24.0, 4.0


def allegretto() -> tuple[list[Event], float, float]:
    """A minor, the Seventh's Allegretto: long-short-short-long-long on slow harmonies."""
    rhythm = [1, 0.5, 0.5, 1, 1]
    chords = [[45, 57, 60, 64], [45, 57, 60, 64], [43, 55, 59, 62], [48, 55, 60, 64],
              [41, 53, 57, 65], [40, 56, 59, 64], [45, 57, 60, 64], [45, 57, 60, 64]]
    ev: list[Event] = []
    for i, c in enumerate(chords):
        t = i * 4
        for d in rhythm:
            ev += _chord(t, d, c, 0.45)
            t += d
    ev += _line(16, [(76, 1), (76, 0.5), (76, 0.5), (76, 1), (76, 1), (77, 1), (77, 0.5), (77, 0.5),
                     (77, 1), (77, 1), (76, 4), (76, 4)], 0.6)
    return ev, 32.0, 4.0


PIECES = {
    "fur_elise": (fur_elise, 70.0),  # (score, tempo in beats per minute)
    "moonlight": (moonlight, 54.0),
    "pathetique": (pathetique, 48.0),
    "ode_to_joy": (ode_to_joy, 112.0),
    "fifth_symphony": (fifth_symphony, 100.0),
    "allegretto": (allegretto, 76.0),
}


@dataclass(frozen=True)
class Piano:
    """One instrument's character: each demo recording gets its own."""

    inharmonicity: float = 2e-4
    brightness: float = 1.0
    decay: float = 1.0
    detune: float = 8e-4
    hammer_noise: float = 0.02

    @classmethod
    def random(cls, rng: np.random.Generator) -> Piano:
        return cls(inharmonicity=float(rng.uniform(1e-4, 4e-4)), brightness=float(rng.uniform(0.8, 1.25)),
                   decay=float(rng.uniform(0.7, 1.3)), detune=float(rng.uniform(3e-4, 1.5e-3)),
                   hammer_noise=float(rng.uniform(0.01, 0.04)))


def note_table(piano: Piano, pitch: int, loud: bool, sr: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One struck note at unit gain: stretched partials, two strings, hammer thump."""
    n = int(sr * seconds)
    t = np.arange(n, dtype=np.float32) / sr
    f0 = 440.0 * 2.0 ** ((pitch - 69) / 12)
    b = piano.inharmonicity * math.exp((pitch - 60) / 24)
    tau0 = float(np.clip(3.5 * 2.0 ** (-(pitch - 40) / 18), 0.3, 6.0)) * piano.decay
    tilt = (1.3 if loud else 1.9) / piano.brightness
    out = np.zeros(n, dtype=np.float32)
    for k in range(1, 15):
        fk = k * f0 * math.sqrt(1 + b * k * k)
        if fk > 0.45 * sr:
            break
        rolloff = math.exp(-fk / ((5000.0 if loud else 2500.0) * piano.brightness))  # felt hammers are soft
        amp = k ** -tilt * (0.35 + 0.65 * abs(math.sin(math.pi * k / 8))) * rolloff
        tau = tau0 / (1 + 0.25 * (k - 1) ** 1.3)
        env = (0.65 * np.exp(-t / (0.2 * tau)) + 0.35 * np.exp(-t / tau)).astype(np.float32)
        phase = rng.uniform(0, 2 * math.pi, 2)
        strings = np.cos(2 * math.pi * fk * t + phase[0]) + np.cos(2 * math.pi * fk * (1 + piano.detune) * t + phase[1])
        out += (amp * 0.5) * env * strings.astype(np.float32)
    attack = 1.0 - np.exp(-t / 0.002)
    thump = rng.standard_normal(n).astype(np.float32) * np.exp(-t / 0.006) * piano.hammer_noise * (2.0 if loud else 1.0)
    thump = np.convolve(thump, np.ones(4, np.float32) / 4, mode="same")  # soften the noise a little
    return (out * attack + thump).astype(np.float32)


def render(events: list[Event], bpm: float, bar_beats: float, piano: Piano, sr: int,
           rng: np.random.Generator, pedal: bool = True, table_seconds: float = 3.5) -> np.ndarray:
    """Mix notes into a mono signal: humanised timing, pedal to the bar line, damper release."""
    spb = 60.0 / bpm
    end_beat = max(s + d for s, d, _, _ in events)
    total = int((end_beat * spb + 1.5) * sr)
    out = np.zeros(total, dtype=np.float32)
    tables: dict[tuple[int, bool], np.ndarray] = {}
    release = np.exp(-np.arange(int(0.3 * sr), dtype=np.float32) / (0.06 * sr))
    for start, beats, pitch, vel in events:
        vel = float(np.clip(vel + rng.normal(0, 0.05), 0.05, 1.0))
        loud = vel > 0.6
        key = (pitch, loud)
        if key not in tables:
            tables[key] = note_table(piano, pitch, loud, sr, table_seconds, rng)
        off_beat = start + beats
        if pedal:
            off_beat = max(off_beat, math.ceil((start + 1e-6) / bar_beats) * bar_beats)
        t_on = int((start * spb + rng.normal(0, 0.008)) * sr)
        t_on = max(t_on, 0)
        hold = min(int((off_beat - start) * spb * sr), len(tables[key]))
        tail = min(len(release), len(tables[key]) - hold)
        note = tables[key][: hold + tail].copy()
        note[hold:] *= release[:tail]
        stop = min(t_on + len(note), total)
        out[t_on:stop] += (0.1 + 0.9 * vel) ** 1.7 * note[: stop - t_on]
    return out


def recording(index: int, seconds: float, sr: int, seed: int = 0) -> tuple[str, np.ndarray]:
    """Recording `index`: a piece (cycling through PIECES), its own piano, tempo and dynamics."""
    rng = np.random.default_rng([seed, index])
    names = list(PIECES)
    name = names[index % len(names)]
    score, bpm = PIECES[name]
    events, length, bar = score()
    bpm *= float(rng.uniform(0.88, 1.12))
    piano = Piano.random(rng)
    transpose = int(rng.integers(-2, 3)) if index >= len(names) else 0
    beats_needed = seconds * bpm / 60.0
    played: list[Event] = []
    rep = 0
    while rep * length < beats_needed:  # repeats vary: octave doublings and terraced dynamics
        level = float(rng.choice([0.7, 0.85, 1.0, 1.15]))
        octave = 12 if rep % 3 == 2 else 0
        for s, d, p, v in events:
            high = octave if p >= 60 else 0
            played.append((s + rep * length, d, p + transpose + high, min(1.0, v * level)))
        rep += 1
    played = [e for e in played if e[0] < beats_needed]
    audio = render(played, bpm, bar, piano, sr, rng, pedal=name != "fifth_symphony")
    audio = audio[: int(seconds * sr)]
    audio *= float(rng.uniform(0.5, 0.9)) / max(float(np.abs(audio).max()), 1e-9)
    return name, audio
