"""Old spelling of `hf-transfer predict`: `python -m hf_transfer.predict ...` keeps working. The function lives in `hf_transfer.runs.predict`."""

import sys

from .runs.predict import predict  # noqa: F401  (`from hf_transfer.predict import predict` keeps working)

if __name__ == "__main__":
    from .cli import main

    main(["predict", *sys.argv[1:]])
