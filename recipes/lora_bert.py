"""LoRA on a BERT-family text classifier: `recipes/peft_finetune.py` with text defaults.

LoRA (r 8, alpha 16) on the attention query and value projections, the new head trained and saved
with the adapter. Any other peft method or bottleneck adapters by --peft_method; every option of
peft_finetune applies. With no arguments: the bundled MiniLM-L6 on Rotten Tomatoes, 100 per class.

    python recipes/lora_bert.py
    accelerate launch recipes/lora_bert.py --lora_r 16 --push_to_hub --hub_model_id me/minilm-rt-lora
    python recipes/lora_bert.py --model_name_or_path bert-base-uncased --train_file train.csv --text_column review

    from recipes.lora_bert import run; metrics = run(lora_r=16, num_train_epochs=5)
"""

from hf_transfer.cli import recipe_main
from recipes.peft_finetune import DEFAULTS as PEFT_DEFAULTS
from recipes.peft_finetune import run_with_defaults

DEFAULTS = {**PEFT_DEFAULTS, "output_dir": "outputs/lora_bert"}


def run(argv: list[str] | None = None, **overrides) -> dict:
    return run_with_defaults(DEFAULTS, "lora_bert", argv, overrides)


if __name__ == "__main__":
    recipe_main(run)
