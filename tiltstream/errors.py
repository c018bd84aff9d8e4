"""The one exception type that reaches the user as a single line (what, which value, what is allowed)."""


class UserError(Exception):
    """Bad input or an unrecoverable condition the user must act on.

    The message is printed as one line by the ``tiltstream`` dispatcher, with no traceback, and the
    process exits non-zero. Write it as: what is wrong, which value, what is allowed or what to do.
    """
