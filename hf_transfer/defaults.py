"""Every tuned default of the toolkit, in one place: recipes, the advisor and the library import them from here.

Each value was chosen on validation splits of the bundled data (never a test split) and checked on held-out
data sets; the comment names the docs page that holds the measurement. Change a value here and the recipes,
their `--help`, the advisor's commands and the tests that compare them follow.
"""

# Few-shot protocol (docs/results/fewshot.md): with no validation set given, one is held out of train only when it
# holds at least this many examples of every class; fewer are too few to choose an epoch or a head's L2 on (one
# example more or less right moves accuracy by several points), so every example trains instead. 10, not 5: at 64
# per class (6 held out) training on everything scored 2.4 points higher on the bundled validation splits.
MIN_VALIDATION_PER_CLASS = 10
# Without a validation split, a fitted head's L2 is chosen by this many folds of cross-validation on train.
HEAD_L2_FOLDS = 5

# Full fine-tuning: the pretrained body's learning rate unless --learning_rate (docs/results/defaults.md,
# "Learning rates"). Distillation and domain adaptation fine-tune every layer the same way and use it too.
BODY_LEARNING_RATES = {"text": 5e-5, "image": 3e-4}
# The new head's learning rate unless --head_learning_rate (docs/results/defaults.md, "Head learning rate").
HEAD_LEARNING_RATES = {"text": 1e-3, "image": 1e-3}
FINETUNE_EPOCHS = 10  # full fine-tuning, adapters, gradual unfreezing, distillation (best epoch on validation kept)
# LP-FT's fitted head (Kumar et al. 2022): the strongest L2 within one standard error of the best on validation. A
# smaller head is a better start for fine-tuning every layer than the most accurate probe (docs/results/defaults.md).
FULL_FINETUNE_HEAD_L2_CHOICE = "one_se"
# Full fine-tuning's head start: "auto" starts few-shot text (no validation split held out) from the zero-shot head
# of its label names, 2-4 points above LP-FT's fitted head at 8 and 16 per class on the bundled validation splits
# (docs/results/fewshot.md, "Starting the head from the label names"); everything else from LP-FT's fitted head.
# LP-FT's head pulled toward the zero-shot head (label_prior, the adapters' few-shot start) was 0.7 points lower
# on average for full fine-tuning at 8-64 per class on the same splits (higher in 7 of 24 runs): not chosen here.
FULL_FINETUNE_HEAD_PHASE = "auto"
FULL_FINETUNE_FEW_SHOT_HEAD_START = "label_descriptions"
# Full fine-tuning's supervised contrastive term, (1 - w) CE + w SupCon at temperature t on the head's input features
# (--supcon_weight; Gunel et al. 2021's few-shot setting w 0.9, t 0.3): off, because it did not help on average. At 64
# per class it scored +1.8 points on the Rotten Tomatoes validation split and -2.5 on the convention speeches'
# (docs/results/fewshot.md, "What did not close the gaps").
FULL_FINETUNE_SUPCON_WEIGHT = 0.0
SUPCON_TEMPERATURE = 0.3

# Gradual unfreezing: a flat body LR beat a 10x range within the schedule (it already trains lower groups for fewer
# epochs); the fitted head helped images and hurt text; its L2 is the best on validation (docs/results/defaults.md,
# "Gradual unfreezing").
GRADUAL_UNFREEZE_LEARNING_RATES = {"text": 1e-4, "image": 1e-3}
GRADUAL_UNFREEZE_HEAD_PHASES = {"text": "steps", "image": "cached"}
GRADUAL_UNFREEZE_HEAD_L2_CHOICE = "best"
# A group thawing mid-run re-warms its LR over this many steps; None: the run's own warm-up length (one epoch at
# 10 epochs). +1.0 point on the bundled image validation splits at 10 epochs, and no divergence on a check set where
# thawing at the full LR diverged in every seed (docs/results/defaults.md, "Re-warming a thawed group").
GRADUAL_UNFREEZE_REWARM_STEPS = None

# Adapters: the learning rate of each peft method unless --learning_rate; LoRA r 8 / alpha 16 and no dropout (0.1 tied
# on validation and keeps a mask per adapted layer) (docs/results/adapters.md).
ADAPTER_LEARNING_RATES = {"lora": 5e-4, "dora": 5e-4, "loha": 1e-3, "lokr": 1e-3, "ia3": 3e-3, "bottleneck": 1e-3}
LORA_R = 8
LORA_ALPHA = 16
LORA_DROPOUT = 0.0
# Where an adapter recipe's new head starts (--head_phase, as full fine-tuning's): "auto" starts few-shot text (no
# validation split held out) from ADAPTER_FEW_SHOT_HEAD_START, LP-FT's fitted head with its L2 pulling toward the
# zero-shot head of the label names (label_prior): for LoRA at 8-64 per class on the bundled validation splits 1.0
# point above the zero-shot head it started from before (higher in 15 of 24 runs), which was 4-9 points above a
# random head, and it does not stay near chance where the names say little (docs/results/fewshot.md, "LoRA's head
# start"). Everything else starts from ADAPTER_HEAD_START, the random head every adapter measurement was made with
# (docs/results/adapters.md); LP-FT's head for adapters was not measured there.
ADAPTER_HEAD_PHASE = "auto"
ADAPTER_FEW_SHOT_HEAD_START = "label_prior"
ADAPTER_HEAD_START = "none"

# Contrastive fine-tuning (docs/results/fewshot.md): the body's in-batch loss, its temperature, epochs, batch size
# and learning rate; the head's L2 when no validation split is held out.
CONTRASTIVE_LOSS = "supcon"
CONTRASTIVE_TEMPERATURE = 0.07
CONTRASTIVE_EPOCHS = 10
CONTRASTIVE_MIN_STEPS = 40  # at least this many optimizer steps: more epochs on a few-shot split (fewshot.md)
CONTRASTIVE_BATCH_SIZE = 32
CONTRASTIVE_LEARNING_RATES = {"text": 2e-5, "image": 1e-4}  # text: swept; image: not swept (see the docs page)
CONTRASTIVE_HEAD_L2 = 1.0

# The divergence guard (every recipe): a step loss this many times its running median (and above the loss of
# guessing) is divergence; the weights go back and every learning rate is multiplied by DIVERGENCE_LR_FACTOR. Not
# tuned on validation: a safety net, sized so that one restore takes a rate from where EfficientNet-Lite0 diverged
# under gradual unfreezing (1e-3) to where it did not (3e-4) (docs/known_limits.md).
DIVERGENCE_FACTOR = 4.0
DIVERGENCE_LR_FACTOR = 0.3

# Zero-shot heads: cosine similarity to each label's description divided by this temperature (the logit scale of
# sentence-transformers' contrastive training, 1/20) (docs/recipes/zero_shot.md).
ZERO_SHOT_TEMPERATURE = 0.05
# An image-text checkpoint's prompt for a label without a description (CLIP's, Radford et al. 2021).
ZERO_SHOT_IMAGE_TEMPLATE = "a photo of a {label}."

# Feature extraction's head when trained by AdamW instead of fitted by L-BFGS (docs/recipes/feature_extraction.md).
FROZEN_HEAD_LEARNING_RATE = 1e-3
FROZEN_HEAD_EPOCHS = 30

# The advisor's thresholds (docs/results/advisor.md). Fewer examples than FEW_SHOT in some class: frozen features
# (Fashion-MNIST validation: with the head fitted first, full fine-tuning beat frozen features from 5 per class up,
# 69.3% vs 67.9% at 5; below 5 was not measured).
FEW_SHOT = 5
CEILING = 0.97  # linear probe at or above this on validation: little left for fine-tuning to win
LARGE_MODEL = 300_000_000  # parameters above which full fine-tuning's optimizer state is the problem: adapters
# BatchNorm shift (mean |data mean - stored mean| in stored standard deviations): EfficientNet-Lite0 at 224 px reads
# 0.20 on natural photos, 0.32 on Fashion-MNIST, 0.42 on 8x8 digits; at 64 px every set reads about 0.45.
CLOSE_DOMAIN = 0.25
FAR_DOMAIN = 0.4
LARGE_DATA = 1000  # examples per class from which BatchNorm statistics can be re-estimated from the new data

# The feature cache's size limit: past it the least recently used shards are removed (docs/recipes/feature_extraction.md, "Feature cache").
FEATURE_CACHE_MAX_GB = 20.0
