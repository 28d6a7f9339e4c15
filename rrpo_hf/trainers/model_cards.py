"""Model-card templates of the rrpo-hf trainers, rendered by `_BaseTrainer` (Jinja, `ModelCard.from_template`), and
the rule of what a save may replace.

Each names the paper, the settings that distinguish a run (the ablation row of the reward model, DiffRO vs. RRPO
for the policy), the latest evaluation and how to load what the folder holds. A card ends with `MODEL_CARD_MARKER`;
a save replaces `README.md` only when it is missing or a card of rrpo-hf (`is_replaceable_card`), and otherwise
writes the card to `MODEL_CARD_FALLBACK_NAME` next to the user's README.
"""

import os


#: Last line of every card rrpo-hf writes: what marks a README.md as one a later save may replace.
MODEL_CARD_MARKER = (
    "<!-- Model card written by rrpo-hf: every save replaces it. A README.md without this line is kept. -->"
)

#: Where the card goes when output_dir holds a README.md that rrpo-hf did not write.
MODEL_CARD_FALLBACK_NAME = "MODEL_CARD.md"


def is_replaceable_card(path: str | os.PathLike) -> bool:
    """Whether a save may write its card to `path`: nothing is there, or a card rrpo-hf wrote (with the marker, or
    an older one: the trainer tag and rrpo-hf's framework-versions line)."""
    if not os.path.exists(path):
        return True
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        return False
    return MODEL_CARD_MARKER in text or ("generated_from_trainer" in text and "\n- rrpo-hf: " in text)


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


__all__ = [
    "DIFFRO_MODEL_CARD_TEMPLATE",
    "MODEL_CARD_FALLBACK_NAME",
    "MODEL_CARD_MARKER",
    "REWARD_MODEL_CARD_TEMPLATE",
    "is_replaceable_card",
]
