"""rrpo_hf.ops against direct, loop-based transcriptions of the paper (Eq. 2-4, Algorithm 1)."""

import math

import pytest
import torch
import torch.nn.functional as F

from rrpo_hf.ops import (
    EAM_PLAN_KEYS,
    apply_energy_adaptive_mixup,
    fgm_perturbation,
    mixup_emotion_loss,
    sample_eam_plan,
    smooth_labels,
    soft_cross_entropy,
)


# ------------------------------------------------------------------------------------------------ Eq. 2 / 3
def test_smooth_labels_is_eq2():
    labels = torch.tensor([0, 2, 1])
    smoothed = smooth_labels(labels, num_classes=4, epsilon=0.2)
    for i, label in enumerate(labels.tolist()):
        for k in range(4):
            y_k = 1.0 if k == label else 0.0
            assert smoothed[i, k].item() == pytest.approx((1 - 0.2) * y_k + 0.2 / 4)
    assert torch.allclose(smoothed.sum(-1), torch.ones(3))
    assert torch.equal(smooth_labels(labels, 4, 0.0), F.one_hot(labels, 4).float())


def test_soft_cross_entropy_matches_torch_label_smoothing():
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 6), torch.randint(0, 6, (5,))
    ours = soft_cross_entropy(logits, smooth_labels(labels, 6, 0.1))
    assert ours.shape == (5,)
    assert torch.allclose(ours, F.cross_entropy(logits, labels, label_smoothing=0.1, reduction="none"), atol=1e-6)


def test_mixup_emotion_loss_is_eq3():
    torch.manual_seed(1)
    logits = torch.randn(4, 5)
    labels, partner_labels = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 0, 2, 1])
    mixup_lambda = torch.tensor([0.0, 0.3, 0.5, 0.9])
    epsilon, num_classes = 0.1, 5

    def loss_ls(logit_row, label):  # L_LS(y_hat, y'): cross-entropy against the Eq. 2 target
        log_probs = torch.log_softmax(logit_row, dim=-1)
        return -sum(((1 - epsilon) * (k == label) + epsilon / num_classes) * log_probs[k] for k in range(num_classes))

    expected = (
        sum(
            (1 - mixup_lambda[i]) * loss_ls(logits[i], labels[i].item())
            + mixup_lambda[i] * loss_ls(logits[i], partner_labels[i].item())
            for i in range(4)
        )
        / 4
    )
    assert torch.allclose(
        mixup_emotion_loss(logits, labels, partner_labels, mixup_lambda, epsilon), expected, atol=1e-6
    )
    per_sample = mixup_emotion_loss(logits, labels, partner_labels, mixup_lambda, epsilon, reduction="none")
    assert per_sample.shape == (4,) and torch.allclose(per_sample.mean(), expected, atol=1e-6)
    # lambda = 0 everywhere is plain label-smoothed cross-entropy.
    assert torch.allclose(
        mixup_emotion_loss(logits, labels, partner_labels, torch.zeros(4), epsilon),
        mixup_emotion_loss(logits, labels, epsilon=epsilon),
    )


def test_loss_ops_reject_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        smooth_labels(torch.tensor([0]), 3, 1.5)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        smooth_labels(torch.tensor([3]), 3, 0.1)
    with pytest.raises(ValueError, match="both"):
        mixup_emotion_loss(torch.randn(2, 3), torch.tensor([0, 1]), partner_labels=torch.tensor([1, 0]))


# ------------------------------------------------------------------------------------------------ Eq. 4
def test_fgm_perturbation_is_eq4_per_sample_over_valid_frames():
    torch.manual_seed(2)
    grad = torch.randn(3, 6, 4, requires_grad=True) * 1.0
    attention_mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3, [1] * 5 + [0]])
    epsilon = 0.5
    delta = fgm_perturbation(grad, attention_mask, epsilon)
    assert not delta.requires_grad
    for i in range(3):
        valid = int(attention_mask[i].sum())
        g_i = grad[i, :valid].detach()
        expected = epsilon * g_i / torch.sqrt((g_i**2).sum())
        assert torch.allclose(delta[i, :valid], expected, atol=1e-6)
        assert torch.count_nonzero(delta[i, valid:]) == 0
        assert delta[i].norm().item() == pytest.approx(epsilon, rel=1e-5)


def test_fgm_perturbation_edge_cases():
    grad = torch.zeros(2, 3, 4)
    grad[1] = 1.0
    delta = fgm_perturbation(grad, None, 0.3)
    assert torch.count_nonzero(delta[0]) == 0 and not torch.isnan(delta).any()
    assert delta[1].norm().item() == pytest.approx(0.3, rel=1e-6)
    assert torch.count_nonzero(fgm_perturbation(grad, None, 0.0)) == 0
    with pytest.raises(ValueError, match="batch, frames, hidden"):
        fgm_perturbation(torch.zeros(2, 3), None, 0.1)


# ------------------------------------------------------------------------------------------------ Algorithm 1
def reference_sample_plan(lengths, snr_range_db, generator):
    """Algorithm 1 lines 1-13 and 16 as written, one sample at a time (0-based indices), on the same random
    draws as the vectorised sampler: SNRs, the permutation, then mix-length, start and partner-start uniforms."""
    batch_size = len(lengths)
    r_min, r_max = snr_range_db
    snr = r_min + (r_max - r_min) * torch.rand(batch_size, generator=generator)
    permutation = torch.randperm(batch_size, generator=generator).tolist()
    u_mix, u_start, u_partner_start = (torch.rand(batch_size, generator=generator) for _ in range(3))
    plan = {key: [] for key in EAM_PLAN_KEYS}
    mix_lengths = []
    for i in range(batch_size):
        j = permutation[i]
        if i == j:
            j = (j + 1) % batch_size
        l_i, l_j = lengths[i], lengths[j]
        l_mix = int(1 + (max(l_i / 2, 1) - 1) * u_mix[i].item())  # U(1, l_i/2), cast to int
        if l_mix > l_j:
            l_mix = l_j
        mix_lengths.append(l_mix)
        plan["eam_partner"].append(j)
        plan["eam_mix_length"].append(l_mix)
        plan["eam_snr_db"].append(snr[i].item())
    for i in range(batch_size):
        j, l_mix = plan["eam_partner"][i], mix_lengths[i]
        plan["eam_start"].append(min(int(u_start[i].item() * (lengths[i] - l_mix + 1)), lengths[i] - l_mix))
    for i in range(batch_size):
        j, l_mix = plan["eam_partner"][i], mix_lengths[i]
        plan["eam_partner_start"].append(
            min(int(u_partner_start[i].item() * (lengths[j] - l_mix + 1)), lengths[j] - l_mix)
        )
    return plan


def reference_apply(features_list, plan):
    """Algorithm 1 lines 14-22 for one sample at a time, on unpadded features."""
    mixed, lambdas, energies = [], [], []
    for i, f_i in enumerate(features_list):
        j, l_mix = plan["eam_partner"][i], plan["eam_mix_length"][i]
        b_i, b_j, r = plan["eam_start"][i], plan["eam_partner_start"][i], plan["eam_snr_db"][i]
        f_j = features_list[j]
        s_i, s_j = f_i[b_i : b_i + l_mix], f_j[b_j : b_j + l_mix]
        e_i, e_j = (s_i**2).mean().item(), (s_j**2).mean().item()
        e_j_target = e_j / 10 ** (r / 10)
        s_j_scaled = math.sqrt(e_j_target / e_j) * s_j
        f_prime = f_i.clone()
        f_prime[b_i : b_i + l_mix] = f_prime[b_i : b_i + l_mix] + s_j_scaled
        mixed.append(f_prime)
        lambdas.append(l_mix / len(f_i) * e_j_target / (e_i + e_j_target))
        energies.append((e_i, e_j, e_j_target))
    return mixed, lambdas, energies


def pad(features_list):
    max_len, hidden = max(len(f) for f in features_list), features_list[0].shape[-1]
    batch = torch.zeros(len(features_list), max_len, hidden)
    mask = torch.zeros(len(features_list), max_len, dtype=torch.long)
    for i, f in enumerate(features_list):
        batch[i, : len(f)], mask[i, : len(f)] = f, 1
    return batch, mask


def test_sample_eam_plan_matches_the_loop_transcription():
    lengths = [12, 3, 8, 1, 20, 7]
    plan = sample_eam_plan(torch.tensor(lengths), (-5.0, 5.0), torch.Generator().manual_seed(11))
    reference = reference_sample_plan(lengths, (-5.0, 5.0), torch.Generator().manual_seed(11))
    for key in EAM_PLAN_KEYS:
        assert plan[key].shape == (6,)
        assert torch.allclose(plan[key].double(), torch.tensor(reference[key]).double()), key


def test_sample_eam_plan_constraints_over_many_batches():
    generator = torch.Generator().manual_seed(0)
    seen_starts = set()
    for _ in range(200):
        lengths = torch.randint(1, 30, (int(torch.randint(2, 9, (1,), generator=generator)),), generator=generator)
        plan = sample_eam_plan(lengths, (-5.0, 5.0), generator)
        partner, mix = plan["eam_partner"], plan["eam_mix_length"]
        assert (partner != torch.arange(len(lengths))).all()
        assert (mix >= 1).all() and (mix <= (lengths // 2).clamp_min(1)).all() and (mix <= lengths[partner]).all()
        assert (plan["eam_start"] >= 0).all() and (plan["eam_start"] + mix <= lengths).all()
        assert (plan["eam_partner_start"] >= 0).all() and (plan["eam_partner_start"] + mix <= lengths[partner]).all()
        assert ((plan["eam_snr_db"] >= -5) & (plan["eam_snr_db"] <= 5)).all()
        seen_starts.update(zip(lengths.tolist(), mix.tolist(), plan["eam_start"].tolist()))
    # Both ends of U{0..l_i - l_mix} occur.
    assert any(start == 0 for _, _, start in seen_starts)
    assert any(start == length - mix > 0 for length, mix, start in seen_starts)


def test_sample_eam_plan_is_deterministic_and_batch_of_one_does_not_mix():
    lengths = torch.tensor([5, 9, 4])
    first = sample_eam_plan(lengths, (-5.0, 5.0), torch.Generator().manual_seed(5))
    second = sample_eam_plan(lengths, (-5.0, 5.0), torch.Generator().manual_seed(5))
    assert all(torch.equal(first[key], second[key]) for key in EAM_PLAN_KEYS)
    single = sample_eam_plan(torch.tensor([7]), (-5.0, 5.0), torch.Generator().manual_seed(0))
    assert single["eam_mix_length"].tolist() == [0] and single["eam_partner"].tolist() == [0]
    features = torch.randn(1, 7, 4)
    mixed, mixup_lambda = apply_energy_adaptive_mixup(features, torch.ones(1, 7), **single)
    assert torch.equal(mixed, features) and mixup_lambda.tolist() == [0.0]


def test_apply_energy_adaptive_mixup_matches_the_loop_transcription():
    torch.manual_seed(3)
    lengths = [10, 4, 7, 13]
    # Different scales per sample so the energies (and thus lambda) differ.
    features_list = [torch.randn(length, 5) * (i + 1) for i, length in enumerate(lengths)]
    plan = sample_eam_plan(torch.tensor(lengths), (-5.0, 5.0), torch.Generator().manual_seed(4))
    batch, mask = pad(features_list)
    mixed, mixup_lambda = apply_energy_adaptive_mixup(batch, mask, **plan)
    reference_mixed, reference_lambda, energies = reference_apply(
        features_list, {k: v.tolist() for k, v in plan.items()}
    )
    for i, length in enumerate(lengths):
        assert torch.allclose(mixed[i, :length], reference_mixed[i], atol=1e-5)
        assert torch.count_nonzero(mixed[i, length:]) == 0  # padding untouched
        # SNR scaling: the added component carries E'_j = E_j / 10^(r/10).
        added = mixed[i, :length] - batch[i, :length]
        segment = added[plan["eam_start"][i] : plan["eam_start"][i] + plan["eam_mix_length"][i]]
        e_i, e_j, e_j_target = energies[i]
        assert (segment**2).mean().item() == pytest.approx(e_j_target, rel=1e-4)
        assert 10 * math.log10(e_j / (segment**2).mean().item()) == pytest.approx(
            plan["eam_snr_db"][i].item(), abs=1e-3
        )
        assert torch.count_nonzero(added.abs().sum(-1)) == plan["eam_mix_length"][i]
    assert torch.allclose(mixup_lambda, torch.tensor(reference_lambda), atol=1e-6)
    assert ((mixup_lambda > 0) & (mixup_lambda < 1)).all()


def test_apply_uses_the_unmixed_partner_and_handles_silence():
    # Samples 0 and 1 are each other's partner: sample 1 must receive sample 0's *original* frames.
    features = torch.tensor([[[1.0], [1.0]], [[2.0], [2.0]]])
    plan = {
        "eam_partner": torch.tensor([1, 0]),
        "eam_mix_length": torch.tensor([1, 1]),
        "eam_start": torch.tensor([0, 0]),
        "eam_partner_start": torch.tensor([0, 0]),
        "eam_snr_db": torch.tensor([0.0, 0.0]),
    }
    mixed, mixup_lambda = apply_energy_adaptive_mixup(features, torch.ones(2, 2), **plan)
    assert mixed[:, :, 0].tolist() == [[3.0, 1.0], [3.0, 2.0]]
    assert mixup_lambda.tolist() == pytest.approx([0.5 * 4 / 5, 0.5 * 1 / 5])
    silent = torch.zeros(2, 2, 1)
    mixed, mixup_lambda = apply_energy_adaptive_mixup(silent, torch.ones(2, 2), **plan)
    assert torch.count_nonzero(mixed) == 0 and mixup_lambda.tolist() == [0.0, 0.0]


def test_apply_is_differentiable_in_the_features_but_lambda_is_a_constant():
    features = torch.randn(3, 6, 4, requires_grad=True)
    plan = sample_eam_plan(torch.tensor([6, 6, 6]), (-5.0, 5.0), torch.Generator().manual_seed(0))
    mixed, mixup_lambda = apply_energy_adaptive_mixup(features, torch.ones(3, 6), **plan)
    assert not mixup_lambda.requires_grad
    mixed.sum().backward()
    assert features.grad is not None and (features.grad >= 1).all()  # every frame counts once, mixed-in ones more


def test_apply_rejects_a_plan_that_does_not_fit_the_batch():
    plan = sample_eam_plan(torch.tensor([8, 8]), (-5.0, 5.0), torch.Generator().manual_seed(0))
    plan["eam_start"] = torch.tensor([7, 0])
    plan["eam_mix_length"] = torch.tensor([3, 3])
    with pytest.raises(ValueError, match=r"samples \[0\].*sample_eam_plan"):
        apply_energy_adaptive_mixup(torch.randn(2, 8, 3), torch.ones(2, 8), **plan)
    with pytest.raises(ValueError, match="shape"):
        apply_energy_adaptive_mixup(torch.randn(3, 8, 3), torch.ones(3, 8), **plan)
