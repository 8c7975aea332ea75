"""Fold a trained peft adapter (LoRA, DoRA, LoHa, LoKr, IA3) into its base: a standalone model for serving.

The merged folder reloads with `from_pretrained` (after `import hf_transfer` when the card says so)
and predicts what base + adapter predicted. Bottleneck adapters are non-linear and cannot be merged.

    python scripts/merge_adapter.py outputs/lora_bert outputs/lora_bert_merged
    python scripts/merge_adapter.py me/vit-photos-lora merged/ --model_name_or_path ./vit-base-local
"""

import argparse
import sys

from hf_transfer.adapter_files import merge
from hf_transfer.errors import TransferError


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter", help="an adapter folder written by an hf_transfer recipe, or its Hub repo id")
    parser.add_argument("merged_dir", help="a new (or empty) folder for the merged model")
    parser.add_argument("--model_name_or_path", default=None, help="the base checkpoint, when it is no longer where training found it")
    args = parser.parse_args(argv)
    try:
        out = merge(args.adapter, args.merged_dir, model_name_or_path=args.model_name_or_path)
    except TransferError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"merged model written to {out}")


if __name__ == "__main__":
    main()
