"""Models: checkpoints in, classifiers out, and what the toolkit knows about their structure.

Loading a checkpoint (Hub, local folder, timm, torchvision, bundled) as a classifier with a new head
(`loading`, `transfer_classifier`), the architecture registry (`architectures`), the model's parameters as
ordered layer groups from input to output (`layer_groups`, asked of the model like timm's `group_matcher`),
looking through DDP / FSDP / peft wrappers (`wrappers`), freezing that really freezes (`freezing`), partial
transfer, a frozen base kept in compute precision, and the zero-shot scores of NLI and image-text checkpoints (`zero_shot`). May import only the top-level leaves
(`errors`, `options`, `assets`, `hub`, `defaults`).
"""
