"""Old spelling of `hf-transfer push` (see `hf-transfer push --help`); kept so existing commands keep working."""

import sys

from hf_transfer.cli import main

if __name__ == "__main__":
    main(["push", *sys.argv[1:]])
