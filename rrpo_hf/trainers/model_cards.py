"""Model-card templates of the rrpo-hf trainers, rendered by `_BaseTrainer` (Jinja, `ModelCard.from_template`).

Each names the paper, the settings that distinguish a run (the ablation row of the reward model, DiffRO vs. RRPO
for the policy), the latest evaluation and how to load what the folder holds.
"""

REWARD_MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A speech-emotion reward model over discrete speech tokens, trained with the hybrid regularization of
[RRPO: Robust Reward Policy Optimization for LLM-based Emotional TTS](https://huggingface.co/papers/2512.04552)
using rrpo-hf{% if base_model %}, fine-tuned from `{{ base_model }}`{% endif %}.

Labels: {{ labels }}.

## Regularization

| setting | value |
|---|---|
{% for name, value in regularization %}| {{ name }} | {{ value }} |
{% endfor %}
Ablation row: **{{ ablation_row }}**.

## Evaluation

{% if eval_table %}{{ eval_table }}{% else %}No evaluation was run.{% endif %}

WA = accuracy, UA = mean per-class recall, F1 = macro-F1.

## Usage

```python
from transformers import AutoModelForAudioClassification

model = AutoModelForAudioClassification.from_pretrained("{{ model_id }}", trust_remote_code=True)
logits = model(input_ids=speech_tokens, attention_mask=attention_mask).logits  # S3 speech tokens (25 Hz)
```

### Framework versions

- rrpo-hf: {{ rrpo_version }}
- Transformers: {{ transformers_version }}
- PyTorch: {{ pytorch_version }}
"""


DIFFRO_MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A CosyVoice2 speech language model optimised for emotional TTS with
{% if method == "RRPO" %}[RRPO: Robust Reward Policy Optimization for LLM-based Emotional TTS](https://huggingface.co/papers/2512.04552)
(a robust reward: label smoothing, energy-adaptive mixup and adversarial training), {% endif %}differentiable reward
optimisation ([DiffRO](https://huggingface.co/papers/2507.05911)): straight-through Gumbel-Softmax samples of the
speech tokens are scored by a frozen speech-emotion reward model and the reward is back-propagated into the LM,
trained with [rrpo-hf](https://github.com/rrpo-hf/rrpo-hf){% if base_model %} from `{{ base_model }}`{% endif %}.

Method: **{{ method }}**.

## Settings

| setting | value |
|---|---|
{% for name, value in settings %}| {{ name }} | {{ value }} |
{% endfor %}
## Latest evaluation

{% if eval_table %}{{ eval_table }}{% else %}No evaluation was run.{% endif %}

## Usage

{% if saved_format == "adapter" %}This repository holds the LoRA adapter only; its base model is `{{ adapter_base }}`.

```python
from peft import PeftModel
from rrpo_hf import CosyVoice2LM

policy = PeftModel.from_pretrained(CosyVoice2LM.from_pretrained("{{ adapter_base }}"), "{{ model_id }}")
```
{% else %}This repository holds the {% if saved_format == "merged" -%}
merged (LoRA folded into the base weights){% else %}full{% endif %} model.

```python
from rrpo_hf import CosyVoice2LM

policy = CosyVoice2LM.from_pretrained("{{ model_id }}")
```
{% endif %}
`DiffROTrainer.export_cosyvoice(path)` writes an `llm.pt` that CosyVoice2 loads with its own flow and vocoder.

### Framework versions

- rrpo-hf: {{ rrpo_version }}
- Transformers: {{ transformers_version }}
- PyTorch: {{ pytorch_version }}
"""


__all__ = ["DIFFRO_MODEL_CARD_TEMPLATE", "REWARD_MODEL_CARD_TEMPLATE"]
