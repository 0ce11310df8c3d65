"""The one exception type that the CLI turns into a single-line error."""


class ScalelabError(Exception):
    """Bad input (config, corpus, CSV, checkpoint): the message is shown as one line, exit code 1."""
