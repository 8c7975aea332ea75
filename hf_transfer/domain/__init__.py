"""Domain adaptation: labelled source examples and unlabelled target examples, with the features pulled together
(`alignment`: DANN, CORAL, MMD), trained through `Trainer` (`adaptation`), or with confident predictions turned
into labels (`pseudo_labels`).

May import the leaves, `models`, `data`, `engine` and `features`.
"""
