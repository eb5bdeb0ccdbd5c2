"""The one exception type for errors a user can cause and fix."""


class UserError(ValueError):
    """Bad input: a config, a dataset, a file. The message names the input and the fix.

    The service maps it to a 4xx; the worker marks the job `failed` with the message.
    """
