"""examples/evaluate_rm.py: Table 2 figures of saved reward models on saved testbed token datasets."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


REPO = Path(__file__).resolve().parents[1]
CODEBOOK = 512


def load_script():
    spec = importlib.util.spec_from_file_location("evaluate_rm_test", REPO / "examples" / "evaluate_rm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def run(script, argv: list[str]) -> dict:
    (args,) = script.make_parser().parse_args_and_config(argv)
    return script.main(args)


def save_model(path: Path, seed: int, labels=None) -> Path:
    from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification

    torch.manual_seed(seed)
    kwargs = (
        {}
        if labels is None
        else {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}
    )
    config = RobustSERConfig(
        vocab_size=CODEBOOK,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=256,
        **kwargs,
    )
    RobustSERForAudioClassification(config).eval().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from datasets import DatasetDict, concatenate_datasets

    from rrpo_hf.testbed import make_emotion_corpus

    root = tmp_path_factory.mktemp("evaluate_rm")
    alpha = make_emotion_corpus("alpha", num_train=8, num_test=24, codebook_size=CODEBOOK, seed=1)
    beta = make_emotion_corpus("beta", num_train=8, num_test=16, codebook_size=CODEBOOK, seed=2)
    # One corpus in two languages, as a DatasetDict: evaluated on `test`, reported as testbed, testbed/alpha, /beta.
    both = concatenate_datasets([alpha["test"], beta["test"]])
    both = both.map(lambda row: {"corpus": "testbed"})
    DatasetDict({"train": alpha["train"], "test": both}).save_to_disk(str(root / "bilingual"))
    # prepare_data.py's shape: one Dataset with a `split` column, emotions as names, no corpus column.
    single = alpha["test"].remove_columns("corpus")
    names = single.features["emotion"].int2str(single["emotion"])
    single = single.remove_columns("emotion").add_column("emotion", names)
    single = single.add_column("split", ["test" if i % 3 else "train" for i in range(len(single))])
    single.save_to_disk(str(root / "names_only"))
    return {
        "root": root,
        "bilingual": root / "bilingual",
        "names_only": root / "names_only",
        "rm_a": save_model(root / "rm_a", seed=0),
        "rm_b": save_model(root / "rm_b", seed=1),
        "rm_four": save_model(root / "rm_four", seed=2, labels=["neutral", "happy", "angry", "sad"]),
    }


def independent_predictions(model_dir: Path, tokens: list[list[int]]) -> np.ndarray:
    from rrpo_hf.models.robust_ser import RobustSERForAudioClassification

    model = RobustSERForAudioClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return np.array([int(model(input_ids=torch.tensor([t])).logits.argmax(-1)) for t in tokens])


def test_table_json_and_confusion_matrices_match_an_independent_computation(workspace, tmp_path):
    from datasets import load_from_disk
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    out = tmp_path / "table2"
    argv = ["--reward_model", str(workspace["rm_a"]), str(workspace["rm_b"]), "--model_names", "base", "rrpo"]
    argv += ["--datasets", str(workspace["bilingual"]), str(workspace["names_only"])]
    argv += ["--output_dir", str(out), "--batch_size", "7", "--device", "cpu"]
    run(load_script(), argv)

    results = json.loads((out / "results.json").read_text())
    assert list(results["models"]) == ["base", "rrpo"]
    assert results["groups"] == {"testbed": 40, "names_only": 16, "testbed/alpha": 24, "testbed/beta": 16}
    bilingual = load_from_disk(str(workspace["bilingual"]))["test"]
    names_only = load_from_disk(str(workspace["names_only"])).filter(lambda s: s == "test", input_columns="split")
    labels = results["models"]["base"]["labels"]
    label_id = {name: i for i, name in enumerate(labels)}
    truth = {
        "testbed": [label_id[n] for n in bilingual.features["emotion"].int2str(bilingual["emotion"])],
        "names_only": [label_id[n] for n in names_only["emotion"]],
    }
    for model, folder in (("base", workspace["rm_a"]), ("rrpo", workspace["rm_b"])):
        predicted = {
            "testbed": independent_predictions(folder, bilingual["speech_tokens"]),
            "names_only": independent_predictions(folder, names_only["speech_tokens"]),
        }
        alpha = np.array(bilingual["language"]) == "alpha"
        cases = {
            "testbed": (truth["testbed"], predicted["testbed"]),
            "testbed/alpha": (np.array(truth["testbed"])[alpha], predicted["testbed"][alpha]),
            "testbed/beta": (np.array(truth["testbed"])[~alpha], predicted["testbed"][~alpha]),
            "names_only": (truth["names_only"], predicted["names_only"]),
        }
        for group, (refs, preds) in cases.items():
            figures = results["models"][model]["groups"][group]
            assert figures["wa"] == pytest.approx(accuracy_score(refs, preds))
            assert figures["ua"] == pytest.approx(balanced_accuracy_score(refs, preds))
            assert figures["macro_f1"] == pytest.approx(f1_score(refs, preds, average="macro"))
            matrix = np.array(figures["confusion_matrix"])
            assert matrix.shape == (6, 6) and matrix.sum() == len(refs) == figures["num_samples"]
            assert np.trace(matrix) / matrix.sum() == pytest.approx(figures["wa"])
            png = out / "confusion" / f"{model}__{group.replace('/', '-')}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = (out / "table.md").read_text().splitlines()
    assert table[0].startswith("| model | testbed WA | testbed UA | testbed F1 | testbed/alpha WA")
    base_wa = 100 * results["models"]["base"]["groups"]["testbed"]["wa"]
    assert table[2].startswith(f"| base | {base_wa:.1f} |") and table[3].startswith("| rrpo |")
    # ε_adv over the norm of h' per utterance, averaged over every row of every dataset
    from rrpo_hf.models.robust_ser import RobustSERForAudioClassification

    model = RobustSERForAudioClassification.from_pretrained(workspace["rm_a"]).eval()
    with torch.no_grad():
        norms = [
            float(model(input_ids=torch.tensor([tokens])).last_hidden_state.norm())
            for tokens in list(bilingual["speech_tokens"]) + list(names_only["speech_tokens"])
        ]
    expected = float(np.mean([model.config.adv_epsilon / norm for norm in norms]))
    ratio = results["models"]["base"]["hidden_scale"]["adv_epsilon_over_hidden_norm"]
    assert ratio == pytest.approx(expected, rel=1e-4)
    assert table[0].endswith(" | ε_adv/‖h'‖ |") and table[2].endswith(f" | {ratio:.4f} |")


def test_outputs_are_not_overwritten_and_unknown_emotions_are_named(workspace, tmp_path):
    script = load_script()
    out = tmp_path / "eval"
    base = ["--datasets", str(workspace["bilingual"]), "--output_dir", str(out), "--disable_tqdm", "true"]
    base += ["--device", "cpu"]

    # A 4-label model: rows of other emotions stop the run, naming the row and the fixes ...
    with pytest.raises(SystemExit, match=r"row \d+ has emotion '(surprised|fearful)'.*--unknown_emotions drop"):
        run(script, ["--reward_model", str(workspace["rm_four"]), *base])
    # ... or are dropped and counted.
    summary = run(script, ["--reward_model", str(workspace["rm_four"]), "--unknown_emotions", "drop", *base])
    figures = summary["models"]["rm_four"]["groups"]["testbed"]
    assert figures["dropped_unknown_emotion"] > 0
    assert figures["num_samples"] + figures["dropped_unknown_emotion"] == 40
    assert len(figures["confusion_matrix"]) == 4

    (out / "notes.txt").write_text("mine")
    before = (out / "results.json").read_text()
    with pytest.raises(SystemExit, match="already holds .*results.json.*--overwrite_output_dir"):
        run(script, ["--reward_model", str(workspace["rm_a"]), "--unknown_emotions", "drop", *base])
    assert (out / "results.json").read_text() == before
    run(
        script,
        [
            "--reward_model",
            str(workspace["rm_four"]),
            "--overwrite_output_dir",
            "true",
            "--unknown_emotions",
            "drop",
            *base,
        ],
    )
    assert (out / "notes.txt").read_text() == "mine"

    (tmp_path / "not_a_model").mkdir()
    # An empty folder is refused before anything loads (script_utils.require_saved_model), naming the fix.
    with pytest.raises(ValueError, match="holds no reward model.*train_rm.py"):
        run(script, ["--reward_model", str(tmp_path / "not_a_model"), *base, "--output_dir", str(tmp_path / "y")])
    with pytest.raises(SystemExit, match=r"no split 'dev' \(its splits: \['test', 'train'\]\)"):
        run(script, ["--reward_model", str(workspace["rm_a"]), *base, "--dataset_split", "dev"])
    with pytest.raises(SystemExit, match=r"`split` column holds \['test', 'train'\]"):
        run(
            script,
            [
                "--reward_model",
                str(workspace["rm_a"]),
                "--datasets",
                str(workspace["names_only"]),
                "--dataset_split",
                "validation",
                "--output_dir",
                str(tmp_path / "x"),
            ],
        )


@pytest.mark.slow
def test_the_script_runs_as_a_command(workspace, tmp_path):
    out = tmp_path / "table2"
    command = [sys.executable, str(REPO / "examples" / "evaluate_rm.py"), "--reward_model", str(workspace["rm_a"])]
    command += ["--datasets", str(workspace["bilingual"]), "--output_dir", str(out), "--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Scoring rm_a" in completed.stderr  # the tqdm progress bar
    assert "| rm_a |" in completed.stdout and (out / "table.md").read_text() in completed.stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]["rm_a"]["groups"]) == {"testbed", "testbed/alpha", "testbed/beta"}
    assert sorted(p.name for p in (out / "confusion").iterdir()) == [
        "rm_a__testbed-alpha.png",
        "rm_a__testbed-beta.png",
        "rm_a__testbed.png",
    ]
