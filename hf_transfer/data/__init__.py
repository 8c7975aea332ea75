"""Data: labelled examples from files, image folders, `save_to_disk` folders, the Hub or the bundled sets, as
`datasets.Dataset`s (memory-mapped Arrow; subsets are index selections), and the preprocessing each checkpoint expects (its tokenizer, image size / mean / std, augmentation, image caches).

May import the top-level leaves and `models` (to ask a checkpoint what input it takes).
"""
