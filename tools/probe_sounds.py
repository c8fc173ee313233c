"""Where a trained model keeps or loses the sound of the synthetic events.

    python tools/probe_sounds.py --model runs/demo_long \
        --records data/demo_long/records/test --clips 40

For the event snippets of `--clips` test clips (the synthetic QA data,
short or long clips), it reads each stage's features of that snippet: the
log-mel spectrogram, the audio encoder's tokens, the Combiner's tokens and
the time-aligned model's latents; and it prints how well each tells the 4
sounds apart: leave-one-out nearest class mean, chance 0.25. A stage
where the number falls is where the sound is lost.
"""

import argparse

import numpy as np

from keras_mirasol.data.snippets import snippet_dataset
from keras_mirasol.data.synthetic import SOUNDS
from keras_mirasol.models import MirasolCausalLM

STAGES = ("log_mel", "audio_tokens", "combined", "av_latents")


def nearest_mean_accuracy(features, labels):
    """Leave-one-out accuracy of the nearest class mean."""
    classes = np.unique(labels)
    correct = 0
    for i in range(len(labels)):
        rest = np.arange(len(labels)) != i
        means = np.stack(
            [features[rest & (labels == c)].mean(axis=0) for c in classes]
        )
        guess = classes[np.argmin(((means - features[i]) ** 2).sum(1))]
        correct += guess == labels[i]
    return correct / len(labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="A run folder.")
    parser.add_argument("--records", required=True, help="Test records.")
    parser.add_argument("--clips", type=int, default=40)
    args = parser.parse_args()
    lm = MirasolCausalLM.from_preset(args.model)
    backbone = lm.backbone
    snippets = backbone.num_snippets
    features = {stage: [] for stage in STAGES}
    labels = []
    # 6 questions per clip: one batch is one clip; the caption names the
    # events' sounds in time order.
    dataset = snippet_dataset(args.records, lm.preprocessor, 6)
    for x in dataset.take(args.clips):
        x = x[0] if isinstance(x, tuple) else x
        audio = np.asarray(x["audio"])[:1]
        video = np.asarray(x["video"])[:1]
        caption = [r.decode() for r in np.asarray(x["responses"]) if b" " in r][
            0
        ].split()
        per_snippet = audio.shape[1] // snippets
        loud = [
            t
            for t in range(snippets)
            if np.abs(audio[0, t * per_snippet : (t + 1) * per_snippet]).max()
            > 0.01
        ]
        combined, av_latents = backbone.encode_media(video, audio)
        stages = {
            "log_mel": backbone.audio_encoder.log_mel(audio),
            "audio_tokens": backbone.audio_encoder(audio),
            "combined": combined,
            "av_latents": av_latents,
        }
        for stage, value in stages.items():
            value = np.asarray(value).reshape(snippets, -1)
            features[stage].extend(value[t] for t in loud)
        labels.extend(SOUNDS.index(sound) for sound in caption[1::2])
    labels = np.array(labels)
    print(f"{len(labels)} event snippets; chance 1/{len(SOUNDS)}")
    for stage in STAGES:
        accuracy = nearest_mean_accuracy(np.array(features[stage]), labels)
        print(f"{stage:>12}: {accuracy:.3f}")


if __name__ == "__main__":
    main()
