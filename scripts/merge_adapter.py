"""Old spelling of `hf-transfer merge` (see `hf-transfer merge --help`); kept so existing commands keep working."""

import sys

from hf_transfer.cli import main

if __name__ == "__main__":
    main(["merge", *sys.argv[1:]])
