"""The one error type of the device runtime."""


class EdgeError(Exception):
    """A problem the user can act on; the message names the file (or source) and what is wrong.

    The command line catches it once, prints the message as one line and picks the exit code.
    """
