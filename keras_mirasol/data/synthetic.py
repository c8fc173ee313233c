"""A synthetic audio-visual question answering dataset of real mp4 files.

Every clip lasts `num_snippets * snippet_seconds` seconds (default 4 x 0.5 s,
the span of `mirasol_tiny`) and is cut into equal segments. In segment `t`
one large shape (a circle or a square, at random) of colour `colours[t]`
moves across a black screen while the sound `sounds[t]` plays:

- colours: 4 distinct of red, green, blue, yellow, cyan, magenta;
- sounds: hum (low sine), whistle (high sine), buzz (square wave), hiss
  (noise), each once per clip in a random order;

Question types (per clip one of each, two `aligned` about different
sounds; answers are single words):

- `video` (needs video): "what colour is shown third?" -> a colour;
- `audio` (needs audio): "when does the whistle play?" -> first, second,
  third or fourth;
- `aligned` (needs both, aligned in time): "what colour is on screen when
  the buzz plays?" -> a colour;
- `order` (needs video across snippets): "what colour comes after red?"
  -> a colour;
- `caption` (needs both, in order): "describe the clip." -> every
  segment's colour and sound, e.g. "red hum blue hiss green buzz cyan
  whistle". Dense supervision: it teaches the model to read the snippets
  in time order, which the single-word answers alone learn slowly.

Long clips (`num_events` below `num_snippets`, the data of `keras-mirasol
demo --long`): the events, each a segment as above, sit in `num_events`
segments drawn at random from a longer clip (e.g. 4 of 32 segments, 16 s);
every other segment is a black screen and silence. The questions are the
same, about the events in time order: the evidence of a `video`, `audio`
or `aligned` question sits in one segment anywhere in the clip, and the
`order` and `caption` answers span the whole clip.

Because colours within a clip are distinct and every sound plays once, no
single-modality shortcut answers the `aligned` questions: without audio a
model can only pick one of the clip's 4 colours (25%), without video one of
the 6 colours (17%).

Clips are written as mp4 files of lossless H.264 video and ALAC audio with
`write_clip(..., lossless=True)`, annotations as JSONL lines `{"video",
"question", "answer", "type", "clip_id"}`, one file per split. Everything
is drawn from one seed, and the files are a function of the seed: what a
clip decodes to is fixed by the rendered arrays (lossless codecs, integer
RGB to YUV), whatever decisions the encoder takes, on any machine and with
any number of workers.
"""

import json
import os

import numpy as np

from keras_mirasol.data.media import write_clip
from keras_mirasol.data.workers import worker_pool

COLOURS = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 70, 250),
    "yellow": (240, 230, 30),
    "cyan": (30, 220, 230),
    "magenta": (230, 40, 220),
}
SOUNDS = ("hum", "whistle", "buzz", "hiss")
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")
QUESTION_TYPES = ("video", "audio", "aligned", "order", "caption")


def _sound(name, num_samples, sample_rate, rng):
    """One sound of `num_samples` samples, faded in and out."""
    t = np.arange(num_samples) / sample_rate
    jitter = rng.uniform(0.95, 1.05)
    if name == "hum":
        wave = np.sin(2 * np.pi * 220 * jitter * t)
    elif name == "whistle":
        wave = np.sin(2 * np.pi * 2000 * jitter * t)
    elif name == "buzz":
        wave = 0.6 * np.sign(np.sin(2 * np.pi * 500 * jitter * t))
    elif name == "hiss":
        wave = rng.uniform(-1, 1, num_samples)
    else:
        raise ValueError(f"Unknown sound {name!r}; use one of {SOUNDS}.")
    fade = min(num_samples // 8, int(0.01 * sample_rate))
    envelope = np.ones(num_samples)
    envelope[:fade] = np.linspace(0, 1, fade)
    envelope[num_samples - fade :] = np.linspace(1, 0, fade)
    return wave * envelope * rng.uniform(0.3, 0.5)


def _draw_shape(frame, shape, colour, centre, radius):
    height, width = frame.shape[:2]
    y, x = np.mgrid[:height, :width]
    if shape == "circle":
        inside = (y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius**2
    else:
        inside = (np.abs(y - centre[0]) <= radius * 0.8) & (
            np.abs(x - centre[1]) <= radius * 0.8
        )
    frame[inside] = colour


def _events(num_snippets, num_events):
    """The number of events in a clip; raises ValueError if impossible."""
    events = num_snippets if num_events is None else num_events
    if events > len(SOUNDS):
        raise ValueError(
            f"{events} events (num_snippets={num_snippets}, num_events="
            f"{num_events}): at most {len(SOUNDS)}, one per distinct sound. "
            "Set `num_events` (`synth --events`) to 4 or fewer for longer "
            "clips."
        )
    if not 2 <= events <= num_snippets:
        raise ValueError(
            f"num_events={num_events} must be between 2 (the order "
            f"questions compare two events) and num_snippets={num_snippets}."
        )
    return events


def render_clip(
    rng,
    num_snippets=4,
    snippet_seconds=0.5,
    fps=8,
    image_size=64,
    sample_rate=16000,
    num_events=None,
):
    """Draw one clip's content.

    Args:
        rng: `np.random.Generator`.
        num_snippets: int. Segments per clip. Defaults to `4`.
        snippet_seconds: float. Length of a segment. Defaults to `0.5`.
        fps: int. Frames per second. Defaults to `8`.
        image_size: int. Frame height and width (even). Defaults to `64`.
        sample_rate: int. Audio rate in Hz. Defaults to `16000`.
        num_events: int or None. Segments that show a shape and play a
            sound (at most 4, one per distinct sound), placed at random;
            the others are black and silent. Defaults to `None`, which
            means every segment.

    Returns:
        `(video uint8 [F, S, S, 3], audio float32 [A], facts)`; `facts` has
        `colours`, `sounds` and `shapes`, one entry per event in time
        order, and `segments`, the segment index of each event.
    """
    events = _events(num_snippets, num_events)
    if events == num_snippets:
        segments = list(range(num_snippets))
    else:
        segments = sorted(
            int(t) for t in rng.choice(num_snippets, events, replace=False)
        )
    colours = list(rng.choice(list(COLOURS), events, replace=False))
    sounds = list(rng.choice(SOUNDS, events, replace=False))
    shapes = list(rng.choice(["circle", "square"], events))
    frames_per_segment = int(round(snippet_seconds * fps))
    samples_per_segment = int(round(snippet_seconds * sample_rate))
    video = np.zeros(
        (num_snippets * frames_per_segment, image_size, image_size, 3),
        np.uint8,
    )
    audio = np.zeros((num_snippets * samples_per_segment,), np.float32)
    radius = image_size * rng.uniform(0.3, 0.36)
    for event, t in enumerate(segments):
        segment = video[t * frames_per_segment : (t + 1) * frames_per_segment]
        segment[:] = np.asarray(COLOURS[colours[event]], np.uint8) // 3
        start = rng.uniform(radius, image_size - radius, 2)
        end = rng.uniform(radius, image_size - radius, 2)
        for k in range(frames_per_segment):
            centre = start + (end - start) * k / max(frames_per_segment - 1, 1)
            _draw_shape(
                video[t * frames_per_segment + k],
                shapes[event],
                COLOURS[colours[event]],
                centre,
                radius,
            )
        # The sound fills the middle 80% of its segment.
        margin = samples_per_segment // 10
        length = samples_per_segment - 2 * margin
        begin = t * samples_per_segment + margin
        audio[begin : begin + length] = _sound(
            sounds[event], length, sample_rate, rng
        )
    facts = {
        "colours": colours,
        "sounds": sounds,
        "shapes": shapes,
        "segments": segments,
    }
    return video, audio, facts


def make_questions(facts, rng):
    """Questions about a clip (one `video`, `audio` and `order`, two
    `aligned` about different sounds) and its caption.

    Returns:
        list of dicts with `question`, `answer` and `type`.
    """
    colours, sounds = facts["colours"], facts["sounds"]
    shown = rng.integers(len(colours))
    heard = rng.integers(len(sounds))
    aligned = rng.choice(len(sounds), 2, replace=False)
    before = rng.integers(len(colours) - 1)
    return (
        [
            {
                "question": f"what colour is shown {ORDINALS[shown]}?",
                "answer": colours[shown],
                "type": "video",
            },
            {
                "question": f"when does the {sounds[heard]} play?",
                "answer": ORDINALS[heard],
                "type": "audio",
            },
        ]
        + [
            {
                "question": "what colour is on screen when the "
                f"{sounds[index]} plays?",
                "answer": colours[index],
                "type": "aligned",
            }
            for index in aligned
        ]
        + [
            {
                "question": f"what colour comes after {colours[before]}?",
                "answer": colours[before + 1],
                "type": "order",
            },
            {
                "question": "describe the clip.",
                "answer": " ".join(f"{c} {s}" for c, s in zip(colours, sounds)),
                "type": "caption",
            },
        ]
    )


def _write_one(job):
    """Worker: render, write (atomically) and annotate clip `index`."""
    out_dir, seed, index, settings = job
    rng = np.random.default_rng([seed, index])
    video, audio, facts = render_clip(rng, **settings)
    clip_id = f"clip_{index:05d}"
    name = f"{clip_id}.mp4"
    path = os.path.join(out_dir, "videos", name)
    if not os.path.exists(path):
        temporary = os.path.join(out_dir, "videos", f".{clip_id}.tmp.mp4")
        write_clip(
            temporary,
            video,
            settings["fps"],
            audio,
            settings["sample_rate"],
            lossless=True,
        )
        os.replace(temporary, path)
    return [
        dict(qa, video=name, clip_id=clip_id)
        for qa in make_questions(facts, rng)
    ]


def write_dataset(
    out_dir,
    clips=3000,
    seed=0,
    splits=(("train", 0.85), ("val", 0.05), ("test", 0.1)),
    workers=None,
    num_snippets=4,
    snippet_seconds=0.5,
    fps=8,
    image_size=64,
    sample_rate=16000,
    num_events=None,
    verbose=False,
):
    """Write `clips` mp4 files and one JSONL annotation file per split.

    Files: `out_dir/videos/clip_00000.mp4`, ... and `out_dir/{split}.jsonl`.
    Clip `i` is drawn from `np.random.default_rng([seed, i])`, so it does
    not depend on how many others are written or on `workers`; an existing
    clip file is kept (a stopped run resumes).

    Args:
        out_dir: str. Output folder.
        clips: int. Number of clips over all splits. Defaults to `3000`.
        seed: int. Seeds every clip's content. Defaults to `0`.
        splits: `(name, fraction)` pairs; clips are assigned in order, in
            proportion to the fractions.
            Defaults to `(("train", 0.85), ("val", 0.05), ("test", 0.1))`.
        workers: int or None. Processes. Defaults to `None`, which means
            all cores.
        num_snippets: int. Segments per clip. Defaults to `4`.
        snippet_seconds: float. Length of a segment in seconds.
            Defaults to `0.5`.
        fps: int. Frames per second. Defaults to `8`.
        image_size: int. Frame height and width (even). Defaults to `64`.
        sample_rate: int. Audio rate in Hz. Defaults to `16000`.
        num_events: int or None. Segments with a colour, shape and sound
            (at most 4), at random places in each clip; the others are
            black and silent (see `render_clip`). Defaults to `None`,
            which means every segment (then at most 4 segments).
        verbose: bool. Show a progress bar. Defaults to `False`.

    Returns:
        dict split -> number of clips.
    """
    _events(num_snippets, num_events)
    os.makedirs(os.path.join(out_dir, "videos"), exist_ok=True)
    settings = dict(
        num_snippets=num_snippets,
        snippet_seconds=snippet_seconds,
        fps=fps,
        image_size=image_size,
        sample_rate=sample_rate,
        num_events=num_events,
    )
    bounds = np.cumsum([0.0] + [fraction for _, fraction in splits])
    bounds = np.round(bounds / bounds[-1] * clips).astype(int)
    jobs = [(out_dir, seed, index, settings) for index in range(clips)]
    progress = None
    if verbose:
        import keras

        progress = keras.utils.Progbar(clips, unit_name="clip")
    annotations = []
    with worker_pool(workers) as pool:
        for lines in pool.map(_write_one, jobs, chunksize=16):
            annotations.append(lines)
            if progress is not None:
                progress.add(1)
    counts = {}
    for (split, _), first, last in zip(splits, bounds[:-1], bounds[1:]):
        counts[split] = int(last - first)
        with open(os.path.join(out_dir, f"{split}.jsonl"), "w") as f:
            for lines in annotations[first:last]:
                for line in lines:
                    f.write(json.dumps(line) + "\n")
    return counts
