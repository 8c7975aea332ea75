"""LoRA on a Vision Transformer (or any image checkpoint): `recipes/peft_finetune.py` with image defaults.

Default checkpoint google/vit-base-patch16-224-in21k (needs the Hub); offline, name a local ViT
folder or bundled:efficientnet-lite0 (LoRA then goes on its convolutions). LoRA on the attention
query/value projections (timm ViTs: qkv and the MLP), the new head trained and saved with the adapter.
With no data named: bundled Fashion-MNIST, 100 per class.

    accelerate launch recipes/lora_vit.py --train_dir photos/ --push_to_hub --hub_model_id me/vit-photos-lora
    python recipes/lora_vit.py --model_name_or_path bundled:efficientnet-lite0 --image_size 128
    python recipes/lora_vit.py --model_name_or_path ./my-vit --peft_method dora --gradient_checkpointing

    from recipes.lora_vit import run; metrics = run(model_name_or_path="./my-vit", train_dir="photos/")
"""

from hf_transfer.cli import recipe_main
from recipes.peft_finetune import DEFAULTS as PEFT_DEFAULTS
from recipes.peft_finetune import run_with_defaults

DEFAULTS = {
    **PEFT_DEFAULTS,
    "model_name_or_path": "google/vit-base-patch16-224-in21k",
    "dataset_name": "bundled:fashion_mnist",
    "output_dir": "outputs/lora_vit",
}


def run(argv: list[str] | None = None, **overrides) -> dict:
    return run_with_defaults(DEFAULTS, "lora_vit", argv, overrides)


if __name__ == "__main__":
    recipe_main(run)
