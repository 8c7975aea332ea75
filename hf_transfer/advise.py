"""Old spelling of `hf-transfer advise`: `python -m hf_transfer.advise ...` keeps working. The function lives in `hf_transfer.advice.advise`."""

import sys

from .advice.advise import advise  # noqa: F401  (`from hf_transfer.advise import advise` keeps working)

if __name__ == "__main__":
    from .cli import main

    main(["advise", *sys.argv[1:]])
