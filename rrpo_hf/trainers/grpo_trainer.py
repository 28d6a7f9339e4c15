"""GRPO for the CosyVoice2 / CosyVoice3 LM, with the rewards of DiffRO / RRPO (docs/grpo.md).

One step, for a micro-batch of `per_device_train_batch_size` rows that holds `num_generations` copies of each prompt
(TRL's `RepeatSampler`):

1. every row generates its completion with the LM's own RAS sampling (`generate_speech_tokens`, no gradient);
2. each reward function scores the one-hot of the generated tokens without gradient (the emotion RM's ``-L_ser``,
   with the adversarial term of a robust RM, the multi-task heads, `SpeechTokenReward` callables); the weighted sum
   ``R_b = Σ_i w_i · r_{i,b}`` gives GRPO's group-relative advantages (`ops.group_relative_advantages`);
3. one teacher-forced pass over ``[sos, instruction<|endofprompt|>text, task_id, u, eos]`` gives the log-probability
   of every generated token and of the stop token (`trl.trainer.utils.selective_log_softmax`);
4. the clipped surrogate with TRL's `loss_type` normalisation (`ops.grpo_per_token_loss`, `ops.aggregate_grpo_loss`),
   plus ``β·k3`` KL to the reference policy when `beta > 0`.

Why not `trl.GRPOTrainer` itself: docs/grpo.md, "Why a subclass of DiffROTrainer".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedModel, TrainerCallback
from trl.trainer.utils import RepeatSampler, selective_log_softmax

from ..data.diffro_collator import pad_speech_tokens
from ..models.cosyvoice2.generation import _length_bounds, count_target_text_tokens
from ..ops import aggregate_grpo_loss, group_relative_advantages, grpo_per_token_loss, token_entropy
from ..rewards import RewardFunction, SpeechTokenReward
from .completions import completion_rows
from .diffro_trainer import DiffROTrainer
from .grpo_config import CosyVoiceGRPOConfig
from .model_cards import DIFFRO_MODEL_CARD_TEMPLATE


logger = logging.getLogger(__name__)

# The DiffRO card with GRPO's method sentence: the usage and framework sections are the same.
GRPO_MODEL_CARD_TEMPLATE = DIFFRO_MODEL_CARD_TEMPLATE.replace(
    DIFFRO_MODEL_CARD_TEMPLATE[
        DIFFRO_MODEL_CARD_TEMPLATE.index("A CosyVoice2 speech") : DIFFRO_MODEL_CARD_TEMPLATE.index("Method:")
    ],
    "A CosyVoice speech language model optimised for emotional TTS with GRPO\n"
    "([DeepSeekMath](https://huggingface.co/papers/2402.03300), TRL's `GRPOTrainer` losses): completions sampled\n"
    "with the LM's repetition-aware sampling are scored by frozen reward models and callables, and the policy\n"
    "gradient of the group-relative advantages trains the LM, with [rrpo-hf](https://github.com/rrpo-hf/rrpo-hf)"
    "{% if base_model %} from `{{ base_model }}`{% endif %}.\n\n",
).replace("`DiffROTrainer.export_cosyvoice(path)`", "`CosyVoiceGRPOTrainer.export_cosyvoice(path)`")


def _as_grpo_reward(func):
    """Reward models, folders and `RewardFunction`s as DiffRO reads them; any other callable is a TRL-style reward
    over speech tokens."""
    if isinstance(func, (str, PreTrainedModel, RewardFunction, torch.nn.Module)) or not callable(func):
        return func
    return SpeechTokenReward(func)


class _EpochSeededRepeatSampler(RepeatSampler):
    """TRL's `RepeatSampler` whose order in epoch e depends on (seed, e) alone: the Trainer calls `set_epoch` before
    every epoch, also the first one after a resume (it skips earlier epochs without iterating them), so a resumed
    run sees the uninterrupted run's order in every epoch."""

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)


class CosyVoiceGRPOTrainer(DiffROTrainer):
    """GRPO (TRL's `GRPOTrainer` losses and names) for a [`CosyVoice2LM`] / [`CosyVoice3LM`] with the DiffRO rewards.

    Args:
        model, processing_class, peft_config, callbacks, optimizers, eval_scorers, judge_model, token2wav:
            as [`DiffROTrainer`] (LoRA or full fine-tuning, a path or a model; `eval_scorers` such as the testbed's
            `OracleScorer` are evaluated on generated speech and written in the completion tables).
        reward_model: the emotion reward, as for `DiffROTrainer`: an emotion RM (its ``-L_ser``, with the adversarial
            term of a robust RM), its folder, a list of them as an ensemble, a ready `EmotionReward`.
        args ([`CosyVoiceGRPOConfig`], *optional*): defaults to TRL's GRPO settings with
            `output_dir="outputs/grpo_policy"`.
        train_dataset, eval_dataset: rows with `text` and `emotion` (and optional `instruction`, zero-shot prompts);
            no speech is needed.
        reward_funcs (list, *optional*): further rewards, after the emotion reward, weighted by `args.reward_weights`:
            reward models or their folders (multi-task heads: `asr`, `quality`), `rrpo_hf.rewards` functions, and
            plain callables with TRL's reward signature over speech tokens,
            ``f(prompts, completions, completion_ids, **kwargs) -> list[float]`` (`SpeechTokenReward`), where
            `completions` and `completion_ids` are each completion's speech token ids and `kwargs` holds
            `target_emotions` (and `languages`). A callable is called once at init on two rows, so that a wrong
            output fails before training.
    """

    _tag_names = ["grpo", "emotional-tts", "cosyvoice2"]
    _name = "GRPO"
    _model_card_template = GRPO_MODEL_CARD_TEMPLATE
    _extra_state_name = "grpo_rng_state"
    _extra_state_missing = "rollout sampling restarts from the seed, so the resumed run generates other completions."
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: str | PreTrainedModel | torch.nn.Module,
        reward_model=None,
        args: CosyVoiceGRPOConfig | None = None,
        data_collator: Callable | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: Any | None = None,
        peft_config: Any | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple = (None, None),
        eval_scorers: list[Callable] | None = None,
        judge_model: str | PreTrainedModel | None = None,
        reward_funcs: Sequence[Callable | str | PreTrainedModel] | Callable | None = None,
        token2wav: Callable | None = None,
    ):
        if args is None:
            args = CosyVoiceGRPOConfig(output_dir="outputs/grpo_policy")
        elif not isinstance(args, CosyVoiceGRPOConfig):
            raise TypeError(
                f"`args` must be a CosyVoiceGRPOConfig (it carries the GRPO settings), got {type(args).__name__}."
            )
        if reward_funcs is not None and not isinstance(reward_funcs, (list, tuple)):
            reward_funcs = [reward_funcs]
        reward_funcs = None if reward_funcs is None else [_as_grpo_reward(func) for func in reward_funcs]
        super().__init__(
            model,
            reward_model=reward_model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            peft_config=peft_config,
            callbacks=callbacks,
            optimizers=optimizers,
            eval_scorers=eval_scorers,
            judge_model=judge_model,
            reward_funcs=reward_funcs,
            token2wav=token2wav,
        )
        self.max_completion_length = args.max_completion_length or args.max_new_tokens or self.max_speech_length
        if args.loss_type == "dr_grpo" and self.max_completion_length is None:
            raise ValueError("loss_type='dr_grpo' normalises by max_completion_length: set it (or max_new_tokens).")

    # ------------------------------------------------------------------ data: G copies of each prompt

    def _get_train_sampler(self, train_dataset: Dataset | None = None):
        """TRL's `RepeatSampler`: each prompt `num_generations` times in a row, so that every micro-batch holds whole
        groups (`per_device_train_batch_size` is a multiple of `num_generations`); seeded per epoch, so a resume
        replays it."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        args = self.args
        prompts_per_step = args.per_device_train_batch_size * args.world_size // args.num_generations
        return _EpochSeededRepeatSampler(
            dataset, mini_repeat_count=args.num_generations, batch_size=prompts_per_step, shuffle=True, seed=args.seed
        )

    def _check_custom_rewards_on_a_batch(self) -> None:
        # A SpeechTokenReward has no gradient by design (GRPO needs none): not worth the "no gradient" warning.
        for func, name in zip(self.reward_funcs, self.reward_func_names):
            if isinstance(func, SpeechTokenReward):
                self.rewards._warned_no_gradient.add(name)
        super()._check_custom_rewards_on_a_batch()

    # ------------------------------------------------------------------ the GRPO step

    def _truncated(self, tokens: list[list[int]], inputs) -> torch.Tensor:
        """`(B,)` whether each completion stopped at the length cap instead of drawing a stop token."""
        args = self.args
        zero_shot = self._zero_shot_inputs(inputs)
        if "text_ratio_lengths" in zero_shot:
            target = zero_shot["text_ratio_lengths"].long().flatten()
        else:
            target = count_target_text_tokens(inputs["text_ids"], inputs["text_attention_mask"], self._prompt_end_id)
        _, max_len = _length_bounds(
            target, args.min_len_ratio, args.max_len_ratio, None, args.max_new_tokens, self.max_speech_length
        )
        lengths = torch.tensor([len(ids) for ids in tokens], device=max_len.device)
        return lengths >= max_len

    def _completion_targets(self, speech_ids, speech_attention_mask, truncated) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens each of the `S + 1` speech logits chose: the generated speech then eos at each row's length,
        and the mask of the tokens that count (eos only where the sample drew it)."""
        batch, width = speech_ids.shape
        lengths = speech_attention_mask.sum(dim=1)
        positions = torch.arange(width + 1, device=speech_ids.device).expand(batch, -1)
        targets = torch.cat([speech_ids * speech_attention_mask, torch.zeros_like(speech_ids[:, :1])], dim=1)
        is_eos = positions == lengths[:, None]
        targets = targets.masked_fill(is_eos, self.policy_config.speech_eos_id)
        mask = (positions < lengths[:, None]) | (is_eos & ~truncated[:, None])
        if self.args.mask_truncated_completions:
            mask = mask & ~truncated[:, None]
        return targets, mask

    def completion_logps(self, model, lm_inputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """`(B, S + 1)` log-probabilities of `targets` under the policy's teacher-forced forward (full softmax over
        the speech vocabulary, temperature 1: the distribution RAS sampling truncates)."""
        logits = model(**lm_inputs).logits[:, : targets.shape[1]]
        return selective_log_softmax(logits.float(), targets), logits

    def _score_completions(self, speech_ids, speech_attention_mask, inputs) -> list[dict[str, torch.Tensor]]:
        """Each reward function's terms on the one-hot of the generated tokens. A robust RM's adversarial term needs
        the gradient of its loss with respect to h' (not the policy's): the one-hot is then a leaf with gradient."""
        dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)
        token_probs = F.one_hot(speech_ids, self.policy_config.speech_token_size).to(dtype)
        adversarial = any(
            getattr(member, "adv_alpha", 0) > 0
            for member in getattr(self.emotion_reward, "members", [self.emotion_reward])
        )
        if adversarial:
            token_probs.requires_grad_(True)
        with torch.enable_grad() if adversarial else torch.no_grad():
            outputs = self.rewards.compute(token_probs, speech_attention_mask, inputs)
        return [{key: value.detach() for key, value in terms.items()} for terms in outputs]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        num_generations = args.num_generations
        text_ids, text_attention_mask = inputs["text_ids"], inputs["text_attention_mask"]
        if text_ids.shape[0] % num_generations != 0:
            raise ValueError(
                f"A micro-batch of {text_ids.shape[0]} rows does not hold whole groups of num_generations="
                f"{num_generations}; give per_device_train_batch_size as a multiple of it, default sampler."
            )
        tokens = self._generate(text_ids, text_attention_mask, self._rollout_generator, self._zero_shot_inputs(inputs))
        speech_ids, speech_attention_mask = pad_speech_tokens(tokens, text_ids.device)
        truncated = self._truncated(tokens, inputs).to(text_ids.device)
        reward_outputs = self._score_completions(speech_ids, speech_attention_mask, inputs)
        rewards = self.rewards.weighted_reward(reward_outputs)
        advantages, reward_std = group_relative_advantages(rewards, num_generations, args.scale_rewards)

        lm_inputs = self._lm_inputs(inputs, speech_ids, speech_attention_mask)
        targets, mask = self._completion_targets(speech_ids, speech_attention_mask, truncated)
        per_token_logps, logits = self.completion_logps(model, lm_inputs, targets)
        ref_per_token_logps = None
        if args.beta != 0.0:
            reference_logits = self._reference_logits(model, lm_inputs)[:, : targets.shape[1]]
            ref_per_token_logps = selective_log_softmax(reference_logits.float(), targets)
        # num_iterations = 1: the completions come from this very policy, so π_old is π_θ without gradient (ratio 1).
        per_token_loss, is_clipped, per_token_kl = grpo_per_token_loss(
            per_token_logps,
            per_token_logps.detach(),
            advantages,
            epsilon_low=args.epsilon_low,
            epsilon_high=args.epsilon_upper,
            beta=args.beta,
            ref_per_token_logps=ref_per_token_logps,
        )
        num_active_tokens = None
        if args.loss_type == "dapo":
            counts = self.accelerator.gather(mask.sum().float().reshape(1))
            num_active_tokens = counts.sum() / self.accelerator.num_processes
        loss = aggregate_grpo_loss(per_token_loss, mask, args.loss_type, self.max_completion_length, num_active_tokens)

        if model.training:
            self._record_grpo_metrics(
                reward_outputs,
                reward_std,
                advantages,
                per_token_kl,
                is_clipped,
                mask,
                logits,
                speech_attention_mask,
                truncated,
            )
            if self._completion_log is not None:
                self._add_grpo_completion_rows(inputs, tokens, reward_outputs, advantages)
        if not return_outputs:
            return loss
        return loss, {
            "completion_ids": tokens,
            "rewards": rewards,
            "advantages": advantages,
            "per_token_logps": per_token_logps.detach(),
            "completion_mask": mask,
        }

    def _record_grpo_metrics(
        self, reward_outputs, reward_std, advantages, per_token_kl, is_clipped, mask, logits, speech_mask, truncated
    ) -> None:
        """TRL's GRPO logs: `reward`, `reward_std` (mean std of the groups), `rewards/<name>/mean|std`,
        `frac_reward_zero_std`, `kl` (β > 0), `clip_ratio/region_mean`, `entropy`, `completions/mean_length`,
        `completions/clipped_ratio`; and `rm_accuracy` of the emotion reward."""
        emotion = reward_outputs[self._emotion_index]
        with torch.no_grad():
            maskf = mask.float()
            valid = speech_mask.bool()
            named = {
                "reward": self.rewards.weighted_reward(reward_outputs).mean(),
                "group_reward_std": reward_std.float().mean(),
                "frac_reward_zero_std": torch.isclose(reward_std, torch.zeros_like(reward_std)).float().mean(),
                "clip_ratio/region_mean": (is_clipped.float() * maskf).sum() / maskf.sum().clamp(min=1.0),
                "entropy": token_entropy(logits[:, : speech_mask.shape[1]].detach().float(), valid),
                "completions/mean_length": valid.sum(dim=1).float().mean(),
                "completions/clipped_ratio": truncated.float().mean(),
                "rm_accuracy": emotion["correct"].float().mean(),
            }
            if per_token_kl is not None:
                named["kl"] = (per_token_kl.detach() * maskf).sum() / maskf.sum().clamp(min=1.0)
            stats = torch.stack([value.float() for value in named.values()] + [valid.sum().float()])
            gathered = self.accelerator.gather_for_metrics(stats[None])
        for name, value in zip(named, gathered.mean(dim=0).tolist()):
            self._metrics[name].append(value)
        self._step_tokens += float(gathered[:, -1].sum())
        self._record_reward_spread(reward_outputs)
        # TRL's reward_std is the mean of the groups' stds (what the advantages were divided by), not the batch's.
        self._metrics["reward_std"][-1] = self._metrics.pop("group_reward_std")[-1]

    def _add_grpo_completion_rows(self, inputs, tokens, reward_outputs, advantages) -> None:
        """The step's completions with their rewards and advantages (and, on a step that logs, the scorers')."""
        from accelerate.utils import gather_object

        from .completions import isolated_rng

        values = {name: rewards.cpu() for name, rewards in self._per_sample_rewards(reward_outputs).items()}
        values["advantage"] = advantages.detach().float().cpu()
        values["rm_accuracy"] = reward_outputs[self._emotion_index]["correct"].detach().float().cpu()
        if self.eval_scorers and self._logs_this_step():
            with torch.no_grad(), isolated_rng(self.accelerator.device):
                values.update(self._scorer_values(tokens, inputs, reserved=set(values)))
        rows = completion_rows(inputs["texts"], inputs["target_emotions"], tokens, values)
        self._completion_log.add(gather_object(rows))

    # ------------------------------------------------------------------ checkpoints, model card

    def _extra_checkpoint_state(self) -> dict[str, Any]:
        return {"rollout": self._rollout_generator.get_state()}

    def _restore_extra_checkpoint_state(self, state: dict[str, Any]) -> None:
        self._rollout_generator.set_state(state["rollout"])

    @property
    def method_name(self) -> str:
        """GRPO; GRPO-robust when the emotion reward has the adversarial term (a robust RM's Eq. 5)."""
        return "GRPO-robust" if self.emotion_reward.adv_alpha > 0 else "GRPO"

    def _model_card_tags(self) -> list[str]:
        return ["grpo"]

    def _model_card_fields(self) -> dict[str, Any]:
        fields = super()._model_card_fields()
        args = self.args
        dropped = ("rollout", "Gumbel-Softmax temperature τ", "straight-through", "KL weight β")
        settings = [(name, value) for name, value in fields["settings"] if name not in dropped]
        fields["settings"] = [
            ("num_generations G", args.num_generations),
            ("loss_type", args.loss_type),
            ("scale_rewards", args.scale_rewards),
            ("clipping ε (low, high)", f"{args.epsilon_low:g}, {args.epsilon_upper:g}"),
            ("KL weight β (k3)", args.beta),
            ("sampling", f"RAS, top_p {args.top_p:g}, top_k {args.top_k}"),
            *settings,
        ]
        return fields


__all__ = ["GRPO_MODEL_CARD_TEMPLATE", "CosyVoiceGRPOTrainer"]
