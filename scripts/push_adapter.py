"""Push a finished run (an adapter, a merged model or a fully fine-tuned one) to the Hugging Face Hub.

Pushes the output folder's top-level files (weights, configs, preprocessing, all_results.json; not
checkpoint-*/ or pickles) with a model card: base model, data set, metrics, training configuration,
`library_name: peft` for peft adapters, tags, and how to load it from the repo. The token comes from
`hf auth login` or HF_TOKEN and is never printed or written.

    python scripts/push_adapter.py outputs/lora_vit me/vit-photos-lora
    python scripts/push_adapter.py outputs/lora_bert me/minilm-rt-lora --private --revision experiment-1
"""

import argparse
import sys

from hf_transfer.errors import TransferError
from hf_transfer.hub import HubTarget, push_run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", help="a recipe's output folder (with all_results.json)")
    parser.add_argument("repo_id", help="the Hub repo to push to: user/name")
    parser.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)")
    parser.add_argument("--revision", default=None, help="push to this branch (created from main if missing)")
    args = parser.parse_args(argv)
    try:
        url = push_run(args.output_dir, HubTarget(args.repo_id, private=args.private or None, revision=args.revision))
    except TransferError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"pushed {args.output_dir} to {url}" + (f" (branch {args.revision})" if args.revision else ""))


if __name__ == "__main__":
    main()
