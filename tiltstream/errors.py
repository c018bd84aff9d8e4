"""The exceptions that reach the user as a single line, and the exit code each one ends a command with."""


class UserError(Exception):
    """Bad input or an unrecoverable condition the user must act on (exit 2).

    The message is printed as one line by the ``tiltstream`` dispatcher, with no traceback, and the
    process exits non-zero. Write it as: what is wrong, which value, what is allowed or what to do.
    """


class MicroscopeFault(UserError):
    """The microscope or its bridge failed during work (exit 4, not 2: the input was fine).

    The line says what failed; the acquire command adds whether the beam was blanked and the exact
    command that continues the session.
    """
