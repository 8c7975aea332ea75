"""Zero-shot classification by an NLI checkpoint (Yin et al. 2019): each text is the premise of one hypothesis per
label ("This example is {label}."), and the label whose hypothesis the checkpoint finds most entailed wins.

These are the scores of transformers' `pipeline("zero-shot-classification")` with `multi_label=False` (a softmax
over the entailment logits of one text's hypotheses), computed in batches of pairs so a saved run predicts and
evaluates like any other classifier.
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
