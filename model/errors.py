"""The one exception type for mistakes a user can make (bad input, impossible config).

The CLI prints such an error as one line naming the input and the rule and exits 2,
without a traceback; any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from a user: the message names the input and the rule it breaks."""
