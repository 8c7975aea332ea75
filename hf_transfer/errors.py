"""One exception type for bad input, so recipes can print one clear line and exit."""


class TransferError(Exception):
    """Bad input a user can fix: the message names the file, column, value or module and what to do."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
