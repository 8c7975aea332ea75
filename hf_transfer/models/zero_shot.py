"""Zero-shot scores from checkpoints trained on pairs, one sentence (a "hypothesis") per label:

- an NLI checkpoint (Yin et al. 2019): each text is the premise of every label's hypothesis ("This example is
  {label}."), scored by the checkpoint's entailment logit;
- an image-text dual encoder such as CLIP or SigLIP (Radford et al. 2021): each image against every label's prompt
  ("a photo of a {label}."), scored by the model's own `logits_per_image` (scaled cosine similarity).

The label with the highest score wins. These are the logits of transformers' `pipeline("zero-shot-classification")`
(`multi_label=False`) and `pipeline("zero-shot-image-classification")`, computed in batches so a saved run predicts
and evaluates like any other classifier.
"""

from __future__ import annotations

import torch


def entailment_id(config) -> int | None:
    """The entailment class of an NLI checkpoint (a label2id name starting with "entail", as transformers' zero-shot
    pipeline finds it), else None: the checkpoint is not an NLI classifier."""
    for name, index in (getattr(config, "label2id", None) or {}).items():
        if str(name).lower().startswith("entail"):
            return int(index)
    return None


def is_image_text(config) -> bool:
    """A dual encoder with a text and a vision tower (CLIP, SigLIP, …): it can score images against sentences."""
    return getattr(config, "text_config", None) is not None and getattr(config, "vision_config", None) is not None


@torch.inference_mode()
def entailment_logits(
    model,
    tokenizer,
    texts: list[str],
    hypotheses: list[str],
    *,
    entailment: int,
    max_length: int,
    batch_size: int = 64,
) -> torch.Tensor:
    """(len(texts), len(hypotheses)) float32 entailment logits on the CPU. Long texts are truncated, never the
    hypothesis (transformers' pipeline truncates the same way)."""
    device = next(model.parameters()).device
    texts_per_batch = max(1, batch_size // len(hypotheses))
    chunks = []
    for start in range(0, len(texts), texts_per_batch):
        batch = texts[start : start + texts_per_batch]
        encoded = tokenizer(
            [text for text in batch for _ in hypotheses],
            hypotheses * len(batch),
            truncation="only_first",
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        logits = model(**{k: v.to(device) for k, v in encoded.items()}).logits[:, entailment]
        chunks.append(logits.float().cpu().view(len(batch), len(hypotheses)))
    return torch.cat(chunks) if chunks else torch.zeros((0, len(hypotheses)))


@torch.inference_mode()
def image_text_logits(model, processor, images: list, hypotheses: list[str]) -> torch.Tensor:
    """(len(images), len(hypotheses)) float32 `logits_per_image` on the CPU for one batch of PIL images. The
    prompts are tokenised as transformers' pipeline does (SigLIP: padded to 64 tokens)."""
    device = next(model.parameters()).device
    padding = (
        {"padding": "max_length", "max_length": 64, "truncation": True}
        if "siglip" in model.config.model_type
        else {"padding": True}
    )
    prompts = processor.tokenizer(hypotheses, return_tensors="pt", **padding)
    pixels = processor.image_processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
    logits = model(
        **{k: v.to(device) for k, v in prompts.items()},
        pixel_values=pixels["pixel_values"].to(device, model.dtype),
    ).logits_per_image
    return logits.float().cpu()
