"""Demo (what `make demo` runs): base vs robust reward model on a corpus with a spurious artifact shortcut.

Both reward models are trained on the same testbed corpus (language `alpha`) in which the `angry` utterances (all of them by default)
carry acoustic-artifact tokens, the kind of shortcut a policy later exploits (reward hacking):

- **base**: the vanilla RM of DiffRO (no label smoothing, no EAM, no adversarial training);
- **robust**: RRPO's hybrid regularization (LS ε=0.1 + EAM + Adv ε_adv=0.5, α=0.5).

They are then scored (WA / UA) on three domains:

- `alpha` — natural test speech of the training language;
- `alpha + artifacts` — the same test utterances with artifact tokens inserted into *every* utterance, so a model
  that reads "artifact = angry" loses accuracy;
- `beta` — a second language (cross-lingual generalization, as in the paper's Table 2).

The numbers are measured, not fixed: on this testbed the shortcut costs the base RM a few points on
`alpha + artifacts`. Runs on CPU in under 2 minutes:  `python examples/demo.py`  (or `make demo`).
"""

from __future__ import annotations

import argparse
import tempfile

from rrpo_hf.data.labels import CANONICAL_EMOTIONS, emotion_label_maps
from rrpo_hf.models.robust_ser import RobustSERConfig
from rrpo_hf.testbed import EmotionWorld, TestbedConfig, insert_artifacts, make_emotion_corpus
from rrpo_hf.trainers import RobustRewardConfig, RobustRewardTrainer

REGULARIZATION = {
    "base": dict(label_smoothing=0.0, use_eam=False, adv_alpha=0.0),
    "robust": dict(label_smoothing=0.1, use_eam=True, adv_alpha=0.5, adv_epsilon=0.5),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_train", type=int, default=600)
    parser.add_argument("--num_test", type=int, default=300)
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--spurious_artifact_rate", type=float, default=1.0, help="P(artifacts | angry) in train.")
    parser.add_argument("--test_artifact_rate", type=float, default=0.2, help="Artifact tokens per token in the probe.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default=None, help="Keep the two models here (default: a temporary folder).")
    return parser.parse_args()


def build_domains(cli, world):
    alpha = make_emotion_corpus(
        "alpha",
        num_train=cli.num_train,
        num_test=cli.num_test,
        spurious_artifact_rate=cli.spurious_artifact_rate,
        spurious_emotions=("angry",),
        world=world,
        seed=cli.seed,
    )
    beta = make_emotion_corpus("beta", num_train=0, num_test=cli.num_test, world=world, seed=cli.seed)["test"]
    corrupted_tokens = insert_artifacts(alpha["test"]["speech_tokens"], cli.test_artifact_rate, world, seed=cli.seed)
    with_artifacts = alpha["test"].remove_columns("speech_tokens").add_column("speech_tokens", corrupted_tokens)
    with_artifacts = with_artifacts.cast(alpha["test"].features)
    domains = {"alpha": alpha["test"], "alpha + artifacts": with_artifacts, "beta": beta}
    return alpha["train"], domains


def train_and_score(name, train, domains, world, cli, output_dir):
    id2label, label2id = emotion_label_maps(CANONICAL_EMOTIONS)
    config = RobustSERConfig(
        vocab_size=world.config.codebook_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=512,
        id2label=id2label,
        label2id=label2id,
    )
    args = RobustRewardConfig(
        output_dir=f"{output_dir}/{name}",
        learning_rate=1e-3,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        num_train_epochs=cli.epochs,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        logging_steps=20,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=cli.seed,
        **REGULARIZATION[name],
    )
    trainer = RobustRewardTrainer(model=config, args=args, train_dataset=train, eval_dataset=domains)
    print(f"\n=== training the {name} reward model ({'; '.join(f'{k}={v}' for k, v in REGULARIZATION[name].items())})")
    trainer.train()
    trainer.evaluate()
    trainer.save_model()
    return trainer.eval_results


def main():
    cli = parse_args()
    world = EmotionWorld(TestbedConfig())
    train, domains = build_domains(cli, world)
    with tempfile.TemporaryDirectory() as scratch:
        output_dir = cli.output_dir or scratch
        results = {name: train_and_score(name, train, domains, world, cli, output_dir) for name in REGULARIZATION}

    print(
        f"\nReward models trained on testbed language 'alpha' where {cli.spurious_artifact_rate:.0%} of angry "
        "utterances carry artifact tokens; WA = accuracy, UA = mean per-class recall (%)."
    )
    for domain in domains:
        print(f"\n{domain}")
        print("| reward model | WA (%) | UA (%) |")
        print("|---|---:|---:|")
        for name in REGULARIZATION:
            scores = results[name][domain]
            print(f"| {name} | {100 * scores['wa']:.1f} | {100 * scores['ua']:.1f} |")


if __name__ == "__main__":
    main()
