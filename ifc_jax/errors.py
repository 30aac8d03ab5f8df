"""User-facing errors: raised for bad input, printed by the CLI as one line."""


class UserError(Exception):
    """A problem with what the user gave us (a file, a flag, a config value).

    The command line prints `error: <message>` and exits with status 2, without a traceback.
    The message must name the file or flag and say what is wrong with it.
    """
