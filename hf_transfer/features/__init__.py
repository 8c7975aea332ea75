"""Frozen features: what a new head sees when the layers below it are frozen, extracted once (`extraction`), kept on
disk across runs (`cache`), a head fitted on them in seconds by L-BFGS (`head_fitting`), and a zero-shot head built
from the encoder's embeddings of label descriptions (`label_descriptions`).

May import the top-level leaves, `models`, `engine` (sharding work across ranks) and `adapters` (where the head is).
"""
