"""Mask known secret values in every log record this process writes.

One :class:`SecretMaskingFilter` per process sits on the handlers of the ``gymfleet``, ``uvicorn`` and root loggers
(handler filters see the records of every child logger too). It replaces each secret value (an API key, the fleet
token, the session secret, env.yaml values) inside the formatted message, the traceback text and the stack text with
``****``, so a secret that reaches a log line through an f-string, an exception message or a URL is still hidden.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

__all__ = ["SecretMaskingFilter", "attach_secret_masking", "install_secret_masking", "mask_secrets"]

MASK = "****"
# Shorter values are not hunted for: they would mask ordinary words ("EMPTY", "none") all over the logs.
MIN_MASKED_LEN = 6
_LOGGER_NAMES = ("", "gymfleet", "uvicorn", "uvicorn.error", "uvicorn.access")


def mask_secrets(text: str, values: Iterable[str]) -> str:
    """``text`` with every occurrence of each value replaced by ``****`` (longest values first)."""
    for value in values:
        if value and value in text:
            text = text.replace(value, MASK)
    return text


class SecretMaskingFilter(logging.Filter):
    """A handler filter that rewrites records in place; never drops one."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        super().__init__()
        self._values: tuple[str, ...] = ()
        self.set_values(values)

    def set_values(self, values: Iterable[str]) -> None:
        unique = {v for v in values if isinstance(v, str) and len(v) >= MIN_MASKED_LEN}
        self._values = tuple(sorted(unique, key=len, reverse=True))

    @property
    def active(self) -> bool:
        return bool(self._values)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._values:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: logging reports it itself, nothing of ours to mask
            return True
        masked = mask_secrets(message, self._values)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text, self._values)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info, self._values)
        return True


_FILTER = SecretMaskingFilter()


def attach_secret_masking(handler: logging.Handler) -> None:
    """Put this process's masking filter on ``handler`` (idempotent); used for handlers made after installing."""
    if _FILTER not in handler.filters:
        handler.addFilter(_FILTER)


def install_secret_masking(values: Iterable[str]) -> SecretMaskingFilter:
    """Mask ``values`` from now on in every record through the handlers of gymfleet's, uvicorn's and the root
    logger (replaces the values of an earlier call). Returns the process's filter."""
    _FILTER.set_values(values)
    for name in _LOGGER_NAMES:
        for handler in logging.getLogger(name).handlers:
            attach_secret_masking(handler)
    return _FILTER
