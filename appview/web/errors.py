"""What can go wrong behind a web page, in words a person can act on.

The UI services raise these; only `appview.web.pages` turns them into an HTML error page (or
JSON for script calls) with the status below. The message is shown as is, so it never holds
internals (hosts, stack traces, upstream bodies): those go to the log.
"""

from __future__ import annotations


class UiError(Exception):
    status = 500
    title = "Something went wrong"
    default_message = "The page could not be shown. Try again in a moment."

    def __init__(self, message: str | None = None, *, hint: str | None = None) -> None:
        self.message = message or self.default_message
        self.hint = hint
        super().__init__(self.message)


class PageNotFound(UiError):
    status, title = 404, "Not found"
    default_message = "There is nothing at this address."


class BadInput(UiError):
    status, title = 400, "That did not work"
    default_message = "The form could not be read."


class SignInRequired(UiError):
    status, title = 401, "Sign in required"
    default_message = "Sign in to do that."


class NotOwner(UiError):
    status, title = 403, "Not allowed"
    default_message = "Only the owner of this repository can do that."


class FormExpired(UiError):
    status, title = 403, "Form expired"
    default_message = "This form expired or came from another site. Go back, reload the page and try again."


class PdsSessionMissing(UiError):
    status, title = 401, "Sign in again"
    default_message = "Your session with your account's server has ended. Sign in again to make changes."


class UpstreamDown(UiError):
    status, title = 503, "Temporarily unavailable"
    default_message = "A server this page depends on did not answer. Try again in a moment."


__all__ = [
    "BadInput",
    "FormExpired",
    "NotOwner",
    "PageNotFound",
    "PdsSessionMissing",
    "SignInRequired",
    "UiError",
    "UpstreamDown",
]
