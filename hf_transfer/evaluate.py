"""Old spelling of `hf-transfer evaluate`: `python -m hf_transfer.evaluate ...` keeps working. The function lives in `hf_transfer.runs.evaluate`."""

import sys

from .runs.evaluate import evaluate  # noqa: F401  (`from hf_transfer.evaluate import evaluate` keeps working)

if __name__ == "__main__":
    from .cli import main

    main(["evaluate", *sys.argv[1:]])
