"""What a newcomer's runs leave and say (issue 26): a README of their own in output_dir survives a save, and an
unknown emotion label is named by its row with the one fix that every script offers."""

import json

import pytest
from test_newcomer_paths import load_example

from rrpo_hf.trainers.model_cards import MODEL_CARD_FALLBACK_NAME, MODEL_CARD_MARKER


TINY_RM = [
    "--testbed_num_train", "32",
    "--testbed_num_test", "16",
    "--testbed_eval_languages", "alpha",
    "--hidden_size", "16",
    "--num_hidden_layers", "1",
    "--intermediate_size", "32",
    "--max_steps", "2",
    "--per_device_train_batch_size", "16",
    "--disable_tqdm", "true",
]  # fmt: skip


def test_a_user_readme_in_output_dir_survives_and_the_card_goes_next_to_it(tmp_path, capsys):
    rm = load_example("train_rm")
    out = tmp_path / "rm"
    out.mkdir()
    (out / "README.md").write_text("# My experiment notes\n")
    rm.main(*rm.make_parser().parse_args_and_config([*TINY_RM, "--output_dir", str(out)]))
    assert (out / "README.md").read_text() == "# My experiment notes\n"
    card = (out / MODEL_CARD_FALLBACK_NAME).read_text()
    assert "speech-emotion reward model" in card and card.rstrip().endswith(MODEL_CARD_MARKER)
    # The script's last line says whether the model is usable.
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(("usable", "NOT usable"))

    # A card rrpo-hf wrote is its own to replace.
    fresh = tmp_path / "fresh"
    rm.main(*rm.make_parser().parse_args_and_config([*TINY_RM, "--output_dir", str(fresh)]))
    first = (fresh / "README.md").read_text()
    assert first.rstrip().endswith(MODEL_CARD_MARKER)
    rm.main(*rm.make_parser().parse_args_and_config([*TINY_RM, "--output_dir", str(fresh), "--seed", "7"]))
    assert (fresh / "README.md").read_text().rstrip().endswith(MODEL_CARD_MARKER)
    assert not (fresh / MODEL_CARD_FALLBACK_NAME).exists()


def test_an_unknown_label_is_named_by_row_with_the_scripts_fix(tmp_path):
    from rrpo_hf.data.labels import UnknownEmotionError

    rows = [{"speech_tokens": [1, 2, 3, 4], "emotion": emotion} for emotion in ["happy", "sad", "bored", "angry"]]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    rm = load_example("train_rm")
    parsed = rm.make_parser().parse_args_and_config(
        ["--dataset_name", str(data), "--output_dir", str(tmp_path / "out"), "--vocab_size", "16", "--max_steps", "1"]
    )
    with pytest.raises(UnknownEmotionError) as raised:
        rm.main(*parsed)
    message = str(raised.value)
    assert "'bored'" in message and "row 2" in message
    assert "prepare_data.py --emotion_aliases" in message and "dataset.filter" in message
