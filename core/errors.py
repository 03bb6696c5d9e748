"""The errors core raises at its boundaries, each meant to be shown to a user as it is.

A chat model raises the same three whatever it is (the local engine, a server behind RemoteLLM), so a
caller handles a refused request, a prompt over the context and a server that is gone once for all:

    ModelRequestError (ValueError)        the request cannot be served as asked: a bad option or value, a
        ContextLengthError                prompt, or prompt plus max_new_tokens, over the context length
    ModelUnavailableError (ConnectionError)  the server cannot be reached, failed (HTTP 5xx) or broke off
"""


class ModelLoadError(Exception):
    """A model could not be found or read; the message says what was tried and how to fix it.

    `reason`: what went wrong; `fix`: the command line's advice (flags, variables, make targets), "" when the reason
    says it all. The message is both; a web page shows `reason` with advice of its own.
    """

    def __init__(self, reason: str, fix: str = ""):
        super().__init__(f"{reason} {fix}" if fix else reason)
        self.reason, self.fix = reason, fix


class ModelRequestError(ValueError):
    """The model refused the request (HTTP 4xx from a server): retrying it unchanged gives the same refusal."""


class ContextLengthError(ModelRequestError):
    """The prompt, or the prompt plus max_new_tokens, needs more tokens than the model's context holds."""


class ModelUnavailableError(ConnectionError):
    """The model's server cannot be reached, failed (HTTP 5xx) or broke off a reply: the request may work later."""
