"""Collators: padding, labels, validation errors, seeded EAM plans."""

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Sequence, Value
from torch.utils.data import DataLoader

from rrpo_hf.data.collators import DataCollatorForEnergyAdaptiveMixup, DataCollatorForSpeechEmotion
from rrpo_hf.data.labels import CANONICAL_EMOTIONS, UnknownEmotionError
from rrpo_hf.ops import EAM_PLAN_KEYS


PAD = 100


def rows(lengths=(5, 2, 7, 3), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "speech_tokens": torch.randint(0, PAD, (length,), generator=generator).tolist(),
            "emotion": i % 6,
            "text": "x",
        }
        for i, length in enumerate(lengths)
    ]


def test_padding_mask_and_labels():
    features = rows()
    batch = DataCollatorForSpeechEmotion(pad_token_id=PAD)(features)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == (4, 7) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].sum(1).tolist() == [5, 2, 7, 3]
    for row, feature in enumerate(features):
        length = len(feature["speech_tokens"])
        assert batch["input_ids"][row, :length].tolist() == feature["speech_tokens"]
        assert (batch["input_ids"][row, length:] == PAD).all()
    assert batch["labels"].tolist() == [0, 1, 2, 3]
    unlabeled = DataCollatorForSpeechEmotion(pad_token_id=PAD, label_column=None)([{"speech_tokens": [1, 2]}])
    assert "labels" not in unlabeled


def test_works_on_a_classlabel_dataset_through_a_dataloader():
    features = Features(
        {
            "speech_tokens": Sequence(Value("int32")),
            "emotion": ClassLabel(names=list(CANONICAL_EMOTIONS)),
            "text": Value("string"),
        }
    )
    dataset = Dataset.from_list(rows(), features=features)
    loader = DataLoader(
        dataset, batch_size=4, collate_fn=DataCollatorForEnergyAdaptiveMixup(pad_token_id=PAD, vocab_size=PAD)
    )
    batch = next(iter(loader))
    assert batch["labels"].tolist() == [0, 1, 2, 3] and all(key in batch for key in EAM_PLAN_KEYS)


def test_string_labels_need_label2id_and_are_normalised():
    label2id = {name: i for i, name in enumerate(CANONICAL_EMOTIONS)}
    collator = DataCollatorForSpeechEmotion(pad_token_id=PAD, label2id=label2id)
    batch = collator([{"speech_tokens": [1], "emotion": "Surprise"}, {"speech_tokens": [2], "emotion": "ang"}])
    assert batch["labels"].tolist() == [label2id["surprised"], label2id["angry"]]
    with pytest.raises(UnknownEmotionError, match="'bored'"):
        collator([{"speech_tokens": [1], "emotion": "bored"}])
    with pytest.raises(UnknownEmotionError, match="does not predict"):
        collator([{"speech_tokens": [1], "emotion": "disgusted"}])
    with pytest.raises(ValueError, match="ClassLabel"):
        DataCollatorForSpeechEmotion(pad_token_id=PAD)([{"speech_tokens": [1], "emotion": "happy"}])
    with pytest.raises(TypeError, match="expected an int"):
        DataCollatorForSpeechEmotion(pad_token_id=PAD)([{"speech_tokens": [1], "emotion": 1.5}])


@pytest.mark.parametrize(
    "collator_kwargs, features, error, message",
    [
        ({}, [{"speech_tokens": [1, 2]}], KeyError, r"missing column\(s\) \['emotion'\].*remove_unused_columns=False"),
        ({}, [{"tokens": [1, 2], "emotion": 0}], KeyError, r"\['speech_tokens'\].*tokens_column="),
        ({}, [{"speech_tokens": [], "emotion": 0}], ValueError, "empty `speech_tokens`.*filter"),
        (
            {"max_length": 3},
            [{"speech_tokens": [1, 2, 3, 4], "emotion": 0}],
            ValueError,
            "more than max_length=3.*truncation",
        ),
        (
            {"vocab_size": PAD},
            [{"speech_tokens": [1, PAD + 5], "emotion": 0}],
            ValueError,
            r"token id 105 out of the codebook \[0, 100\)",
        ),
        ({"vocab_size": PAD}, [{"speech_tokens": [-1], "emotion": 0}], ValueError, "out of the codebook"),
        ({}, [], ValueError, "empty list"),
    ],
)
def test_bad_input_raises_a_clear_error(collator_kwargs, features, error, message):
    with pytest.raises(error, match=message):
        DataCollatorForSpeechEmotion(pad_token_id=PAD, **collator_kwargs)(features)


def test_truncation():
    batch = DataCollatorForSpeechEmotion(pad_token_id=PAD, max_length=3, truncation=True)(
        [{"speech_tokens": [1, 2, 3, 4, 5], "emotion": 0}]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3]]
    with pytest.raises(ValueError, match="needs `max_length`"):
        DataCollatorForSpeechEmotion(pad_token_id=PAD, truncation=True)


def test_eam_plan_is_valid_for_the_padded_batch():
    collator = DataCollatorForEnergyAdaptiveMixup(pad_token_id=PAD, snr_range_db=(-2.0, 3.0))
    for seed in range(20):
        batch = collator(rows(lengths=(5, 2, 7, 3, 9), seed=seed))
        lengths = batch["attention_mask"].sum(1)
        partner, mix = batch["eam_partner"], batch["eam_mix_length"]
        assert (partner != torch.arange(5)).all()
        assert (batch["eam_start"] + mix <= lengths).all() and (
            batch["eam_partner_start"] + mix <= lengths[partner]
        ).all()
        assert ((batch["eam_snr_db"] >= -2.0) & (batch["eam_snr_db"] <= 3.0)).all()


def test_eam_plans_are_deterministic_under_the_seed():
    batches = [rows(seed=s) for s in range(5)]

    def plans(seed):
        collator = DataCollatorForEnergyAdaptiveMixup(pad_token_id=PAD, seed=seed, eam_probability=0.6)
        return [{key: value for key, value in collator(b).items() if key.startswith("eam_")} for b in batches]

    first, second, other = plans(0), plans(0), plans(1)
    assert [sorted(p) for p in first] == [sorted(p) for p in second]
    assert all(torch.equal(a[key], b[key]) for a, b in zip(first, second) for key in a)
    assert any(sorted(a) != sorted(b) or any(not torch.equal(a[k], b[k]) for k in a) for a, b in zip(first, other))


def test_eam_probability_is_the_fraction_of_mixed_batches():
    def mixed_fraction(probability, trials=400):
        collator = DataCollatorForEnergyAdaptiveMixup(pad_token_id=PAD, eam_probability=probability, seed=3)
        features = rows()
        return sum("eam_partner" in collator(features) for _ in range(trials)) / trials

    assert mixed_fraction(1.0) == 1.0
    assert mixed_fraction(0.0) == 0.0
    assert abs(mixed_fraction(0.3) - 0.3) < 0.07
    with pytest.raises(ValueError, match="eam_probability"):
        DataCollatorForEnergyAdaptiveMixup(pad_token_id=PAD, eam_probability=1.5)


def test_batch_of_one_is_never_mixed():
    batch = DataCollatorForEnergyAdaptiveMixup(pad_token_id=PAD)(rows(lengths=(6,)))
    assert not any(key in batch for key in EAM_PLAN_KEYS)


def test_collated_eam_batch_trains_the_reward_model():
    from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification

    config = RobustSERConfig(
        vocab_size=PAD, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    model = RobustSERForAudioClassification(config)
    collator = DataCollatorForEnergyAdaptiveMixup(pad_token_id=config.pad_token_id, vocab_size=config.vocab_size)
    batch = collator(rows())
    output = model(**batch)
    assert torch.isfinite(output.loss) and (output.mixup_lambda > 0).all()
    assert torch.equal(output.partner_labels, batch["labels"][batch["eam_partner"]])
    output.loss.backward()
    assert model.robust_ser.token_embedding.weight.grad.abs().sum() > 0


def test_dataloader_workers_draw_different_plans():
    dataset = [rows(seed=s)[i] for s in range(4) for i in range(4)]
    collator = DataCollatorForEnergyAdaptiveMixup(pad_token_id=PAD, seed=0)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collator)
    batches = list(loader)
    # Workers 0 and 1 take batches alternately; with one shared stream both would start with the same SNRs.
    assert not torch.equal(batches[0]["eam_snr_db"], batches[1]["eam_snr_db"])
    assert torch.equal(
        batches[0]["eam_snr_db"],
        next(iter(DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collator)))["eam_snr_db"],
    )


def test_right_pad_left_aligns_each_list_and_masks_the_padding():
    from rrpo_hf.data.padding import right_pad

    ids, mask = right_pad([[5, 6, 7], [8], []], pad_value=9)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 9], [9, 9, 9]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long
    empty_ids, empty_mask = right_pad([])
    assert empty_ids.shape == empty_mask.shape == (0, 0)


def test_diffro_collator_targets_a_reward_model_label_that_is_no_known_emotion():
    """The trainer accepts a reward model's own class names (`emotion_label_ids`); its collator must too."""
    from rrpo_hf.data.diffro_collator import DataCollatorForDiffRO
    from rrpo_hf.data.labels import UnknownEmotionError
    from rrpo_hf.models.cosyvoice2 import build_tiny_cosyvoice2_tokenizer

    tokenizer = build_tiny_cosyvoice2_tokenizer(["Whisper", "softly", "ka", "mi"])
    collator = DataCollatorForDiffRO(tokenizer, {"whisper": 0, "happy": 1}, with_speech=False, speech_token_size=8)
    rows = [
        {"text": "ka mi", "emotion": "whisper", "instruction": "Whisper softly"},
        {"text": "mi", "emotion": "joy", "instruction": "Whisper softly"},  # an alias of the canonical "happy"
    ]
    batch = collator(rows)
    assert batch["target_emotions"] == ["whisper", "happy"]
    assert batch["emotion_labels"].tolist() == [0, 1]
    with pytest.raises(UnknownEmotionError, match="target emotion 'shout' is not a label of the reward model"):
        collator([{"text": "ka", "emotion": "shout", "instruction": "Whisper softly"}])
