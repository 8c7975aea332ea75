"""`python -m hf_transfer COMMAND ...`: the `hf-transfer` command."""

from .cli import main

main()
