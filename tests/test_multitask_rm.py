"""The multi-task token reward model (DiffRO): config, heads, CTC, Auto/remote code, SER weights, rewards, trainer,
testbed quality corpus and `train_rm.py --tasks`."""

import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset
from transformers import AutoConfig, AutoModel

from rrpo_hf.models.robust_ser import (
    RobustMultiTaskRMConfig,
    RobustSERConfig,
    RobustSERForAudioClassification,
    RobustSERForMultiTaskReward,
)
from rrpo_hf.ops import gumbel_softmax_sample, sample_eam_plan
from rrpo_hf.rewards.multitask import ASRReward, QualityReward, task_rewards
from rrpo_hf.testbed import EmotionWorld, Oracle, TestbedConfig, asr_vocabulary, make_quality_corpus
from rrpo_hf.testbed.quality import QUALITY_LABELS, naturalness_to_quality_class
from rrpo_hf.trainers import DataCollatorForMultiTaskReward, MultiTaskRewardConfig, MultiTaskRewardTrainer


REPO = Path(__file__).resolve().parents[1]
VOCAB = 40
SYMBOLS = ["a", "b", "c", "d", "e"]
ALL_TASKS = ["emotion", "asr", "quality"]


def tiny_config(**overrides):
    values = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=24,
        tasks=ALL_TASKS,
        asr_labels=SYMBOLS,
    )
    values.update(overrides)
    return RobustMultiTaskRMConfig(**values)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RobustSERForMultiTaskReward(tiny_config()).eval()


def padded_batch(lengths=(9, 5, 7), seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.full((len(lengths), max(lengths)), VOCAB, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(0, VOCAB, (length,), generator=generator)
        attention_mask[row, :length] = 1
    return input_ids, attention_mask


TEXTS = ["a b b", "c", "e d a"]


def all_labels(model):
    targets, target_lengths = model.encode_asr_targets(TEXTS)
    return dict(
        labels=torch.tensor([1, 0, 5]),
        asr_targets=targets,
        asr_target_lengths=target_lengths,
        quality_labels=torch.tensor([4, 0, 2]),
    )


# ------------------------------------------------------------------------------------------------ config
def test_config_defaults_validation_and_round_trip(tmp_path):
    assert RobustMultiTaskRMConfig().tasks == ["emotion", "quality"]
    assert RobustMultiTaskRMConfig(asr_labels=SYMBOLS).tasks == ALL_TASKS
    config = tiny_config(tasks=["quality", "asr"], quality_labels=["bad", "ok", "good"])
    assert config.tasks == ["asr", "quality"] and config.num_asr_classes == 6 and config.num_quality_labels == 3
    assert isinstance(config, RobustSERConfig) and config.pad_token_id == VOCAB
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is RobustMultiTaskRMConfig
    assert (loaded.tasks, loaded.asr_labels, loaded.quality_labels) == (
        ["asr", "quality"],
        SYMBOLS,
        ["bad", "ok", "good"],
    )
    with pytest.raises(Exception, match="asr_labels is empty"):
        tiny_config(asr_labels=None)
    with pytest.raises(Exception, match=r"unknown: \['sqa'\]"):
        tiny_config(tasks=["emotion", "sqa"])
    with pytest.raises(Exception, match="non-empty subset"):
        tiny_config(tasks=[])
    with pytest.raises(Exception, match="whitespace"):
        tiny_config(asr_labels=["a", "b c"])
    with pytest.raises(Exception, match="unique"):
        tiny_config(asr_labels=["a", "a"])
    with pytest.raises(Exception, match="pooling must be"):  # the SER checks still run
        tiny_config(pooling="max")


# ------------------------------------------------------------------------------------------------ heads
def test_ctc_head_loss_equals_torch_ctc_loss(model):
    input_ids, attention_mask = padded_batch()
    labels = all_labels(model)
    assert labels["asr_targets"].tolist() == [[1, 2, 2], [3, 0, 0], [5, 4, 1]]
    assert labels["asr_target_lengths"].tolist() == [3, 1, 3]
    out = model(input_ids=input_ids, attention_mask=attention_mask, **labels)
    assert out.asr_logits.shape == (3, 9, len(SYMBOLS) + 1)
    reference = F.ctc_loss(
        out.asr_logits.log_softmax(-1).transpose(0, 1),
        labels["asr_targets"],
        attention_mask.sum(1),
        labels["asr_target_lengths"],
        blank=0,
        reduction="mean",
    )
    assert torch.allclose(out.asr_loss, reference, atol=1e-5)
    quality = F.cross_entropy(out.quality_logits, labels["quality_labels"])
    assert torch.allclose(out.quality_loss, quality, atol=1e-6)
    assert torch.allclose(out.loss, out.emotion_loss + out.asr_loss + out.quality_loss, atol=1e-6)


def test_one_hot_token_probs_give_the_token_outputs_and_losses(model):
    input_ids, attention_mask = padded_batch()
    labels = all_labels(model)
    by_ids = model(input_ids=input_ids, attention_mask=attention_mask, **labels)
    probs = F.one_hot(input_ids.clamp_max(VOCAB - 1), VOCAB).float().requires_grad_(True)
    by_probs = model(input_token_probs=probs, attention_mask=attention_mask, **labels)
    for name in ("logits", "asr_logits", "quality_logits", "loss", "asr_loss", "quality_loss", "emotion_loss"):
        assert torch.allclose(getattr(by_ids, name), getattr(by_probs, name), atol=1e-5), name
    by_probs.loss.backward()
    assert probs.grad is not None and probs.grad.abs().sum() > 0


def test_padding_does_not_change_any_head(model):
    input_ids, attention_mask = padded_batch()
    full = model(input_ids=input_ids, attention_mask=attention_mask)
    alone = model(input_ids=input_ids[1:2, :5])
    assert torch.allclose(full.logits[1], alone.logits[0], atol=1e-5)
    assert torch.allclose(full.quality_logits[1], alone.quality_logits[0], atol=1e-5)
    assert torch.allclose(full.asr_logits[1, :5], alone.asr_logits[0], atol=1e-5)


def test_eam_mixes_the_emotion_head_only(model):
    input_ids, attention_mask = padded_batch()
    plan = sample_eam_plan(attention_mask.sum(1), (-5.0, 5.0), torch.Generator().manual_seed(1))
    plain = model(input_ids=input_ids, attention_mask=attention_mask)
    mixed = model(input_ids=input_ids, attention_mask=attention_mask, labels=torch.tensor([1, 0, 5]), **plan)
    assert (mixed.mixup_lambda > 0).all() and not torch.allclose(mixed.logits, plain.logits)
    assert torch.allclose(mixed.asr_logits, plain.asr_logits, atol=1e-5)
    assert torch.allclose(mixed.quality_logits, plain.quality_logits, atol=1e-5)
    # The emotion part is exactly the SER model's EAM path (same weights, same plan).
    ser_config = RobustSERConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=24,
    )
    ser = RobustSERForAudioClassification(ser_config).eval()
    ser.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(("asr_", "quality_"))})
    ser_mixed = ser(input_ids=input_ids, attention_mask=attention_mask, labels=torch.tensor([1, 0, 5]), **plan)
    assert torch.allclose(ser_mixed.logits, mixed.logits, atol=1e-5)
    assert torch.allclose(ser_mixed.loss, mixed.emotion_loss, atol=1e-6)


SUBSETS = [list(c) for r in (1, 2, 3) for c in itertools.combinations(ALL_TASKS, r)]


@pytest.mark.parametrize("tasks", SUBSETS, ids=lambda tasks: "+".join(tasks))
def test_any_subset_of_heads(tasks):
    torch.manual_seed(0)
    model = RobustSERForMultiTaskReward(tiny_config(tasks=tasks)).eval()
    names = {name.split(".")[0] for name, _ in model.named_parameters()}
    assert ("classifier" in names) == ("emotion" in tasks)
    assert ("asr_head" in names) == ("asr" in tasks)
    assert ("quality_head" in names) == ("quality" in tasks)
    input_ids, attention_mask = padded_batch()
    labels = {}
    if "emotion" in tasks:
        labels["labels"] = torch.tensor([1, 0, 5])
    if "asr" in tasks:
        labels["asr_targets"], labels["asr_target_lengths"] = model.encode_asr_targets(TEXTS)
    if "quality" in tasks:
        labels["quality_labels"] = torch.tensor([4, 0, 2])
    out = model(input_ids=input_ids, attention_mask=attention_mask, **labels)
    assert (out.logits is None) != ("emotion" in tasks)
    assert (out.asr_logits is None) != ("asr" in tasks)
    assert (out.quality_logits is None) != ("quality" in tasks)
    assert out.loss is not None and torch.isfinite(out.loss)
    for missing in set(ALL_TASKS) - set(tasks):
        with pytest.raises(ValueError, match=f"no '{missing}' head"):
            {"emotion": model.classify, "asr": model.transcribe, "quality": model.rate_quality}[missing](
                out.last_hidden_state
            )
    if "emotion" not in tasks:
        plan = sample_eam_plan(attention_mask.sum(1), (-5.0, 5.0), torch.Generator().manual_seed(1))
        with pytest.raises(ValueError, match="no emotion head"):
            model(input_ids=input_ids, attention_mask=attention_mask, **plan)


def test_encode_asr_targets_names_the_unknown_symbol_and_the_fix(model):
    with pytest.raises(
        ValueError, match=r"Text 1 \('a zz'\) has the symbol 'zz'.*not in the ASR vocabulary.*asr_labels"
    ):
        model.encode_asr_targets(["a b", "a zz"])
    with pytest.raises(ValueError, match="Text 0 is empty"):
        model.encode_asr_targets(["  "])


def test_a_transcript_longer_than_its_speech_is_an_error(model):
    input_ids, attention_mask = padded_batch(lengths=(4, 2))
    targets, lengths = model.encode_asr_targets(["a b", "c c"])  # "c c" needs 3 frames, the sample has 2
    with pytest.raises(ValueError, match=r"Samples \[1\] have fewer speech frames.*3 needed"):
        model(input_ids=input_ids, attention_mask=attention_mask, asr_targets=targets, asr_target_lengths=lengths)


def test_decode_asr_reads_symbols(model):
    logits = torch.full((1, 6, len(SYMBOLS) + 1), -10.0)
    for frame, class_id in enumerate([1, 1, 0, 1, 3, 0]):
        logits[0, frame, class_id] = 10.0
    assert model.decode_asr(logits, torch.ones(1, 6, dtype=torch.long)) == ["a a c"]


# ------------------------------------------------------------------------------------------------ Auto, SER weights
def test_auto_model_round_trip(model, tmp_path):
    assert type(AutoModel.from_config(model.config)) is RobustSERForMultiTaskReward
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_robust_multitask.RobustMultiTaskRMConfig",
        "AutoModel": "modeling_robust_multitask.RobustSERForMultiTaskReward",
    }
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(reloaded) is RobustSERForMultiTaskReward and reloaded.config.asr_labels == SYMBOLS
    input_ids, attention_mask = padded_batch()
    a, b = (
        model(input_ids=input_ids, attention_mask=attention_mask),
        reloaded(input_ids=input_ids, attention_mask=attention_mask),
    )
    for name in ("logits", "asr_logits", "quality_logits"):
        assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-6), name


def test_ser_save_format_is_unchanged(tmp_path):
    """The SER folder carries none of the multi-task files (its config bundles the robust loss's settings:
    robust_loss.py with adversarial.py; the token embedding bundles gumbel.py's soft_token_embedding)."""
    ser = RobustSERForAudioClassification(
        RobustSERConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
        )
    )
    ser.save_pretrained(tmp_path)
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith(".py")) == [
        "adversarial.py",
        "configuration_robust_ser.py",
        "eam.py",
        "gumbel.py",
        "label_smoothing.py",
        "modeling_robust_ser.py",
        "remote_code.py",
        "robust_loss.py",
        "saving.py",
    ]
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "robust_ser"


@pytest.mark.parametrize("tasks", [["emotion", "asr", "quality"], ["asr"]], ids=["with-emotion", "asr-only"])
def test_a_ser_checkpoint_fills_the_shared_encoder_and_the_emotion_head(tmp_path, tasks):
    torch.manual_seed(3)
    ser_config = RobustSERConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=24,
        id2label={0: "happy", 1: "sad"},
    )
    ser = RobustSERForAudioClassification(ser_config).eval()
    ser.save_pretrained(tmp_path / "ser")
    model = RobustSERForMultiTaskReward.from_robust_ser(tmp_path / "ser", tasks=tasks, asr_labels=SYMBOLS).eval()
    assert model.config.tasks == tasks and model.config.id2label == {0: "happy", 1: "sad"}
    ser_state, state = ser.state_dict(), model.state_dict()
    for key, value in ser_state.items():
        if "emotion" in tasks or not key.startswith(("pooler.", "classifier.")):
            assert torch.equal(state[key], value), key
    input_ids, attention_mask = padded_batch()
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    ser_out = ser(input_ids=input_ids, attention_mask=attention_mask)
    assert torch.equal(out.last_hidden_state, ser_out.last_hidden_state)
    if "emotion" in tasks:
        assert torch.equal(out.logits, ser_out.logits)
    with pytest.raises(TypeError, match="needs a RobustSER emotion model"):
        RobustSERForMultiTaskReward.from_robust_ser(model, tasks=tasks, asr_labels=SYMBOLS)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys

    class RefuseRrpoHf:  # proves the checkpoint does not need the library, even if it is installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "rrpo_hf":
                raise ImportError("rrpo_hf must not be imported by remote code")

    sys.meta_path.insert(0, RefuseRrpoHf())
    import torch
    from transformers import AutoModel

    checkpoint, resaved, inputs_file, result_file = sys.argv[1:5]
    inputs = torch.load(inputs_file)
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    targets, lengths = model.encode_asr_targets(inputs.pop("texts"))
    with torch.no_grad():
        out = model(**inputs, asr_targets=targets, asr_target_lengths=lengths)
    model.save_pretrained(resaved)
    again = AutoModel.from_pretrained(resaved, trust_remote_code=True).eval()
    with torch.no_grad():
        again_out = again(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    torch.save(
        {
            "class": type(model).__module__ + "." + type(model).__name__,
            "rrpo_hf_imported": any(name.split(".")[0] == "rrpo_hf" for name in sys.modules),
            "logits": out.logits, "asr_logits": out.asr_logits, "quality_logits": out.quality_logits,
            "loss": out.loss, "asr_loss": out.asr_loss, "again_asr_logits": again_out.asr_logits,
            "decoded": model.decode_asr(out.asr_logits, inputs["attention_mask"]),
        },
        result_file,
    )
    """
)


@pytest.mark.slow  # a fresh interpreter imports torch + transformers (~10-20 s)
def test_saved_folder_loads_as_remote_code_without_rrpo_hf(model, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    saved = set(os.listdir(checkpoint))
    assert {
        "modeling_robust_multitask.py",
        "modeling_robust_ser.py",
        "configuration_robust_multitask.py",
        "configuration_robust_ser.py",
        "ctc.py",
        "eam.py",
        "label_smoothing.py",
    } <= saved
    for name in saved:
        if name.endswith(".py"):
            source = (checkpoint / name).read_text()
            assert not re.search(r"^\s*(from|import)\s+(rrpo_hf|\.\.)", source, re.MULTILINE), name

    input_ids, attention_mask = padded_batch()
    labels = all_labels(model)
    inputs = dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels["labels"],
        quality_labels=labels["quality_labels"],
        texts=TEXTS,
    )
    torch.save(inputs, tmp_path / "inputs.pt")
    (tmp_path / "cwd").mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            REMOTE_SCRIPT,
            str(checkpoint),
            str(tmp_path / "resaved"),
            str(tmp_path / "inputs.pt"),
            str(tmp_path / "out.pt"),
        ],
        cwd=tmp_path / "cwd",
        env=env,
        check=True,
        timeout=300,
    )
    result = torch.load(tmp_path / "out.pt")
    assert result["class"].startswith("transformers_modules.") and not result["rrpo_hf_imported"]
    with torch.no_grad():
        expected = model(input_ids=input_ids, attention_mask=attention_mask, **labels)
    for name in ("logits", "asr_logits", "quality_logits", "loss", "asr_loss"):
        assert torch.allclose(result[name], getattr(expected, name), atol=1e-5), name
    assert torch.allclose(result["again_asr_logits"], expected.asr_logits, atol=1e-5)
    assert result["decoded"] == model.decode_asr(expected.asr_logits, attention_mask)


# ------------------------------------------------------------------------------------------------ rewards
def gumbel_probs(batch_size=3, length=9, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch_size, length, VOCAB, generator=generator, requires_grad=True)
    sample, _ = gumbel_softmax_sample(logits, temperature=1.0, straight_through=True, generator=generator)
    return logits, sample


def test_asr_reward_is_the_per_symbol_ctc_loss_and_its_gradient_reaches_the_policy(model):
    logits, token_probs = gumbel_probs()
    attention_mask = torch.ones(3, 9, dtype=torch.long)
    reward = ASRReward(model)
    assert reward.name == "asr"
    terms = reward.loss_terms(token_probs, attention_mask, {"texts": TEXTS, "emotion_labels": torch.zeros(3)})
    assert terms["loss"].shape == (3,) and terms["feasible"].tolist() == [1.0, 1.0, 1.0]
    with torch.no_grad():
        out = model(input_token_probs=token_probs, attention_mask=attention_mask)
    targets, lengths = model.encode_asr_targets(TEXTS)
    reference = F.ctc_loss(
        out.asr_logits.log_softmax(-1).transpose(0, 1), targets, attention_mask.sum(1), lengths, reduction="none"
    )
    assert torch.allclose(terms["loss"], reference / lengths, atol=1e-5)
    raw = ASRReward(model, normalize_by_length=False)(token_probs, attention_mask, {"texts": TEXTS})
    assert torch.allclose(raw, reference, atol=1e-5)
    (grad,) = torch.autograd.grad(terms["loss"].sum(), logits)
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
    assert not any(p.requires_grad for p in model.parameters())


def test_asr_reward_gives_infeasible_speech_the_worst_loss_without_gradient(model):
    logits, token_probs = gumbel_probs(batch_size=2, length=4)
    attention_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    texts = ["a b", "c c d"]  # the second needs 4 frames and has 2
    reward = ASRReward(model)
    terms = reward.loss_terms(token_probs, attention_mask, {"texts": texts})
    assert terms["feasible"].tolist() == [1.0, 0.0] and torch.isinf(terms["log_likelihood"][1])
    expected = max(terms["loss"][0].item(), np.log(model.config.num_asr_classes))
    assert terms["loss"][1].item() == pytest.approx(expected)
    (grad,) = torch.autograd.grad(terms["loss"].sum(), logits)
    assert torch.isfinite(grad).all() and grad[1].abs().sum() == 0 and grad[0].abs().sum() > 0
    with pytest.raises(KeyError, match="no 'texts'"):
        reward(token_probs, attention_mask, {"emotion_labels": torch.zeros(2)})


def test_quality_reward_objectives_and_gradient(model):
    logits, token_probs = gumbel_probs()
    attention_mask = torch.ones(3, 9, dtype=torch.long)
    with torch.no_grad():
        log_probs = model(input_token_probs=token_probs, attention_mask=attention_mask).quality_logits.log_softmax(-1)
    target = QualityReward(model)
    assert target.name == "quality"
    loss = target(token_probs, attention_mask, {})
    assert torch.allclose(loss, -log_probs[:, 4], atol=1e-5)
    assert torch.allclose(
        QualityReward(model, target="3")(token_probs, attention_mask, {}), -log_probs[:, 2], atol=1e-5
    )
    expected = QualityReward(model, name="mos", objective="expected")
    assert torch.allclose(
        expected(token_probs, attention_mask, {}), -(log_probs.exp() * torch.arange(1.0, 6.0)).sum(-1), atol=1e-5
    )
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert grad.abs().sum() > 0
    with pytest.raises(ValueError, match="not a quality class"):
        QualityReward(model, target="9")


def test_a_reward_asking_for_a_missing_head_fails_clearly():
    emotion_only = RobustSERForMultiTaskReward(tiny_config(tasks=["emotion"]))
    with pytest.raises(ValueError, match=r"no 'asr' head \(tasks=\['emotion'\]\); train it with --tasks emotion,asr"):
        ASRReward(emotion_only)
    with pytest.raises(ValueError, match=r"no 'quality' head.*--tasks emotion,quality"):
        QualityReward(emotion_only)
    ser = RobustSERForAudioClassification(
        RobustSERConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
        )
    )
    with pytest.raises(ValueError, match=r"no 'asr' head \(tasks=\['emotion'\]\)"):
        ASRReward(ser)
    assert task_rewards(emotion_only) == [] and task_rewards(ser) == []


def test_task_rewards_one_per_non_emotion_head(model):
    rewards = task_rewards(model)
    assert [type(r) for r in rewards] == [ASRReward, QualityReward] and [r.name for r in rewards] == ["asr", "quality"]
    asr_only = RobustSERForMultiTaskReward(tiny_config(tasks=["asr"]))
    assert [r.name for r in task_rewards(asr_only)] == ["asr"]


# ------------------------------------------------------------------------------------------------ testbed corpus
def test_quality_corpus_is_seeded_and_labelled_by_the_oracle():
    world = EmotionWorld(TestbedConfig(codebook_size=512))
    corpus = make_quality_corpus(num_train=120, num_test=40, world=world, seed=3)
    again = make_quality_corpus(num_train=120, num_test=40, world=world, seed=3)
    train = corpus["train"]
    assert {"speech_tokens", "text", "emotion", "quality", "naturalness", "perturbation"} <= set(train.column_names)
    assert train.features["quality"] == ClassLabel(names=list(QUALITY_LABELS))
    assert train["speech_tokens"] == again["train"]["speech_tokens"] and train["quality"] == again["train"]["quality"]
    assert (
        train["speech_tokens"]
        != make_quality_corpus(num_train=120, num_test=40, world=world, seed=4)["train"]["speech_tokens"]
    )
    naturalness = Oracle(world).score(train["text"], train["speech_tokens"], train["emotion"])["naturalness"]
    assert np.allclose(naturalness, train["naturalness"])
    assert train["quality"] == naturalness_to_quality_class(naturalness).tolist()
    assert naturalness_to_quality_class([1.0, 1.6, 2.4, 4.49, 4.9, 5.0]).tolist() == [0, 1, 1, 3, 4, 4]
    assert set(train["quality"]) == set(range(5)) and set(train["perturbation"]) == {
        "none",
        "insert_artifacts",
        "substitute_tokens",
        "repeat_tokens",
    }
    natural = [q for q, p in zip(train["quality"], train["perturbation"]) if p == "none"]
    assert np.mean(natural) > 3.5  # natural speech is rated 4-5
    symbols = set(asr_vocabulary(world))
    assert all(set(text.split()) <= symbols for text in train["text"])
    with pytest.raises(ValueError, match="Unknown degradation"):
        make_quality_corpus(num_train=4, num_test=0, degradations={"noise": 1.0})


# ------------------------------------------------------------------------------------------------ trainer
@pytest.fixture(scope="module")
def quality_corpus():
    return make_quality_corpus(num_train=256, num_test=96, seed=0)


def tiny_testbed_config(**overrides):
    values = dict(
        vocab_size=512,
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=256,
        asr_labels=asr_vocabulary(),
        tasks=ALL_TASKS,
        hidden_dropout_prob=0.0,
        attention_dropout=0.0,
    )
    values.update(overrides)
    return RobustMultiTaskRMConfig(**values)


def trainer_args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        learning_rate=3e-3,
        num_train_epochs=1,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=32,
        lr_scheduler_type="constant",
        logging_steps=4,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    values.update(overrides)
    return MultiTaskRewardConfig(**values)


def test_tiny_run_lowers_the_asr_loss_and_beats_chance_on_quality(tmp_path, quality_corpus):
    args = trainer_args(tmp_path, num_train_epochs=10, adv_alpha=0.0)
    trainer = MultiTaskRewardTrainer(
        tiny_testbed_config(), args=args, train_dataset=quality_corpus["train"], eval_dataset=quality_corpus["test"]
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    logged = [entry for entry in trainer.state.log_history if "loss_asr" in entry]
    assert {"loss_emo", "loss_asr", "loss_quality", "mixup_lambda"} <= set(logged[0])
    assert logged[-1]["loss_asr"] < 0.5 * logged[0]["loss_asr"]
    assert after["eval_loss"] < 0.5 * before["eval_loss"]
    majority = np.bincount(quality_corpus["test"]["quality"]).max() / len(quality_corpus["test"])
    assert after["eval_quality_accuracy"] > majority + 0.05, (after["eval_quality_accuracy"], majority)
    assert after["eval_wa"] > 0.5  # the emotion head trains as in RobustRewardTrainer
    assert 0 <= after["eval_asr_cer"] and trainer.task_eval_results["eval"].keys() == {"asr_cer", "quality_accuracy"}

    trainer.save_model(str(tmp_path / "saved"))
    card = (tmp_path / "saved" / "README.md").read_text()
    assert "ASR CER (%)" in card and "quality acc. (%)" in card and "AutoModel.from_pretrained" in card
    reloaded = AutoModel.from_pretrained(tmp_path / "saved")
    assert reloaded.config.asr_loss_weight == 1.0 and reloaded.config.tasks == ALL_TASKS


@pytest.mark.slow  # ~30 s on two CPU cores: the CTC head leaves the all-blank plateau after ~150 steps
def test_longer_asr_run_transcribes_the_testbed(tmp_path, quality_corpus):
    args = trainer_args(tmp_path, num_train_epochs=24, tasks=["asr"], logging_steps=50)
    trainer = MultiTaskRewardTrainer(
        tiny_testbed_config(), args=args, train_dataset=quality_corpus["train"], eval_dataset=quality_corpus["test"]
    )
    trainer.train()
    assert trainer.evaluate()["eval_asr_cer"] < 0.5


def test_training_a_subset_freezes_the_other_heads_and_skips_eam(tmp_path, quality_corpus):
    args = trainer_args(tmp_path, tasks="asr,quality", max_steps=2)
    assert args.tasks == ["asr", "quality"]
    model = RobustSERForMultiTaskReward(tiny_testbed_config())
    emotion_head = model.classifier.weight.detach().clone()
    trainer = MultiTaskRewardTrainer(model, args=args, train_dataset=quality_corpus["train"].select(range(32)))
    assert trainer.tasks == ["asr", "quality"] and trainer.data_collator.eam_probability == 0.0
    assert trainer.data_collator.label_column is None
    trainer.train()
    assert torch.equal(model.classifier.weight, emotion_head)
    assert not model.classifier.weight.requires_grad and model.asr_head.weight.requires_grad
    assert "loss_emo" not in trainer.state.log_history[0]
    with pytest.raises(ValueError, match=r"no \['emotion'\] head"):
        MultiTaskRewardTrainer(
            RobustSERForMultiTaskReward(tiny_testbed_config(tasks=["asr"])),
            args=trainer_args(tmp_path, tasks=["emotion", "asr"]),
        )


def small_dataset(**columns):
    values = dict(
        speech_tokens=[[1, 2, 3, 4, 5, 6], [7, 8, 9, 10], [3, 3, 3, 3, 3]],
        text=["a e i", "o u", "p t"],
        emotion=["happy", "sad", "angry"],
        quality=["5", "2", "3"],
    )
    values.update(columns)
    return Dataset.from_dict({key: value for key, value in values.items() if value is not None})


@pytest.mark.parametrize(
    ("columns", "error", "message"),
    [
        (dict(text=None), ValueError, r"lacks the column\(s\) \['text'\].*text_column"),
        (dict(quality=None), ValueError, r"lacks the column\(s\) \['quality'\]"),
        (
            dict(text=["a e i", "o zz", "p t"]),
            ValueError,
            r"Row 1 of the train dataset has the symbol 'zz'.*asr_labels",
        ),
        (dict(text=["a e i", "", "p t"]), ValueError, r"Row 1 of the train dataset has an empty `text`.*filter"),
        (
            dict(text=["a e i", "o o o", "p t"]),
            ValueError,
            r"Row 1 .* 4 speech tokens but its transcript needs at least 5",
        ),
        (dict(quality=["5", "great", "3"]), ValueError, r"quality class\(es\) \['great'\].*quality_labels"),
        (dict(quality=[4, 5, 1]), ValueError, r"Row 1 of the train dataset has `quality` 5, outside the class ids"),
        (dict(quality=[4.5, 2.0, 3.0]), TypeError, "rounded into classes"),
        (dict(emotion=["happy", "bored", "angry"]), Exception, "bored"),
    ],
)
def test_bad_columns_fail_before_the_first_step(tmp_path, columns, error, message):
    with pytest.raises(error, match=message):
        MultiTaskRewardTrainer(
            tiny_testbed_config(), args=trainer_args(tmp_path), train_dataset=small_dataset(**columns)
        )


def test_quality_names_are_mapped_onto_the_model_classes(tmp_path):
    trainer = MultiTaskRewardTrainer(tiny_testbed_config(), args=trainer_args(tmp_path), train_dataset=small_dataset())
    dataset = trainer.train_dataset
    assert dataset["quality"] == [4, 1, 2] and dataset.features["quality"] == ClassLabel(names=list(QUALITY_LABELS))
    batch = trainer.eval_data_collator([dataset[i] for i in range(3)])
    assert batch["quality_labels"].tolist() == [4, 1, 2] and batch["asr_target_lengths"].tolist() == [3, 2, 2]
    assert set(batch) >= {"input_ids", "attention_mask", "labels", "asr_targets"} and "eam_partner" not in batch


def test_collator_names_the_row_of_a_bad_transcript():
    collator = DataCollatorForMultiTaskReward(
        pad_token_id=VOCAB, label_column=None, asr_labels=SYMBOLS, quality_column=None, eam_probability=0.0
    )
    rows = [{"speech_tokens": [1, 2, 3], "text": "a b"}, {"speech_tokens": [1, 2], "text": "a q", "__index__": 17}]
    with pytest.raises(ValueError, match=r"Dataset row 17: text \('a q'\) has the symbol 'q'"):
        collator(rows)


def test_model_argument_errors(tmp_path):
    ser = RobustSERForAudioClassification(
        RobustSERConfig(
            vocab_size=512, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
        )
    )
    with pytest.raises(TypeError, match="from_robust_ser"):
        MultiTaskRewardTrainer(ser, args=trainer_args(tmp_path))
    ser.save_pretrained(tmp_path / "ser")
    with pytest.raises(ValueError, match="RobustSER emotion model.*from_robust_ser"):
        MultiTaskRewardTrainer(str(tmp_path / "ser"), args=trainer_args(tmp_path))
    with pytest.raises(TypeError, match="MultiTaskRewardConfig"):
        from rrpo_hf.trainers import RobustRewardConfig

        MultiTaskRewardTrainer(tiny_testbed_config(), args=RobustRewardConfig(output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="non-empty subset"):
        trainer_args(tmp_path, tasks="emotion,sqa")


# ------------------------------------------------------------------------------------------------ train_rm.py
def run_train_rm(argv):
    spec = importlib.util.spec_from_file_location("multitask_train_rm", REPO / "examples" / "train_rm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.main(*module.make_parser().parse_args_and_config(argv))


TINY_RM = [
    "--testbed_num_train",
    "48",
    "--testbed_num_test",
    "16",
    "--hidden_size",
    "32",
    "--num_hidden_layers",
    "1",
    "--intermediate_size",
    "64",
    "--per_device_train_batch_size",
    "16",
    "--num_train_epochs",
    "1",
    "--logging_steps",
    "1",
]


def test_train_rm_tasks_flag_trains_and_saves_the_multitask_model(tmp_path):
    trainer = run_train_rm([*TINY_RM, "--tasks", "emotion,asr,quality", "--output_dir", str(tmp_path / "rm")])
    assert isinstance(trainer, MultiTaskRewardTrainer) and trainer.tasks == ALL_TASKS
    assert set(trainer.task_eval_results) == {"alpha", "beta"} and set(trainer.eval_results) == {"alpha", "beta"}
    model = AutoModel.from_pretrained(tmp_path / "rm")
    assert type(model) is RobustSERForMultiTaskReward and model.config.asr_labels == asr_vocabulary()


def test_train_rm_starts_the_multitask_model_from_a_ser_checkpoint(tmp_path):
    from rrpo_hf.trainers import RobustRewardTrainer

    ser_trainer = run_train_rm([*TINY_RM, "--output_dir", str(tmp_path / "ser")])
    assert type(ser_trainer) is RobustRewardTrainer  # no --tasks: today's emotion model
    ser = ser_trainer.model
    trainer = run_train_rm(
        [
            *TINY_RM,
            "--tasks",
            "emotion,asr",
            "--model_name_or_path",
            str(tmp_path / "ser"),
            "--output_dir",
            str(tmp_path / "mt"),
            "--learning_rate",
            "0",
        ]
    )
    assert trainer.tasks == ["emotion", "asr"]
    state = trainer.model.state_dict()
    assert all(torch.equal(state[key], value) for key, value in ser.state_dict().items())
