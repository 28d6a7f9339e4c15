"""Testbed figures: corpus generation and oracle scoring speed, and what the oracle says of natural and damaged speech.

    python benchmarks/testbed.py                       # 10,000 utterances scored, default world (codebook 512)
    python benchmarks/testbed.py --num_utterances 2000 --codebook_size 6561

Prints one table: the oracle's mean scores on natural test speech and on the same utterances with inserted artifact
tokens or substituted tokens (the hacking signatures), then the wall time of generating and scoring the corpus.
Targets (issue 2): natural accuracy >= 0.95 with ~0 CER and artifact rate; scoring 10,000 utterances in seconds.
"""

from __future__ import annotations

import argparse
import time

from rrpo_hf.testbed import (
    EmotionWorld,
    Oracle,
    TestbedConfig,
    insert_artifacts,
    make_emotion_corpus,
    substitute_tokens,
)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_utterances", type=int, default=10_000, help="Utterances generated and scored.")
    parser.add_argument("--codebook_size", type=int, default=512)
    parser.add_argument("--language", default="alpha")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main():
    cli = parse_args()
    world = EmotionWorld(TestbedConfig(codebook_size=cli.codebook_size))
    oracle = Oracle(world)

    start = time.perf_counter()
    test = make_emotion_corpus(cli.language, num_train=0, num_test=cli.num_utterances, world=world, seed=cli.seed)[
        "test"
    ]
    generation_s = time.perf_counter() - start
    texts, tokens, emotions = test["text"], test["speech_tokens"], test["emotion"]

    conditions = {
        "natural": tokens,
        "+5% artifacts": insert_artifacts(tokens, 0.05, world, seed=1),
        "+20% artifacts": insert_artifacts(tokens, 0.20, world, seed=1),
        "10% substitutions": substitute_tokens(tokens, 0.10, world, seed=1),
    }
    print(
        f"| speech ({len(test)} utterances, {cli.language}) | emotion accuracy | CER | artifact rate | naturalness | "
        "emotion score |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    scoring_s = None
    for name, condition_tokens in conditions.items():
        start = time.perf_counter()
        scores = oracle.score(texts, condition_tokens, emotions)
        if name == "natural":
            scoring_s = time.perf_counter() - start
        print(
            f"| {name} | {scores['emotion_correct'].mean():.3f} | {scores['cer'].mean():.3f} | "
            f"{scores['artifact_rate'].mean():.3f} | {scores['naturalness'].mean():.2f} | "
            f"{scores['emotion_score'].mean():.2f} |"
        )
    print(f"\ngenerate {len(test)} utterances: {generation_s:.2f} s; oracle scoring of them: {scoring_s:.2f} s")


if __name__ == "__main__":
    main()
