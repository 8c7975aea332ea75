"""Contrastive fine-tuning: the body learns from same-class / other-class structure of the labelled examples
(`losses`: supervised contrastive, SetFit's cosine pairs, batch-hard triplets, all over every pair of a batch),
through `Trainer` (`trainer`); a head is then fitted on the features it learned. `joint`: the same loss as a term
added to cross-entropy while every layer fine-tunes (Gunel et al. 2021).

May import the leaves, `models`, `data`, `engine`, `features` and `adapters`.
"""
