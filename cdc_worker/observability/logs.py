"""structlog set-up: JSON off a terminal, key=value on one; secrets masked on the way out."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from cdc_worker.settings import SECRET_PARAMETER_WORDS

URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s]+)(?=@)", re.I)
# A secret query parameter in any URL-like text: the words of settings.secret_parameter.
_SECRET_WORD = "|".join(map(re.escape, SECRET_PARAMETER_WORDS))
QUERY_SECRET = re.compile(
    rf"(?P<head>[?&;][^=&;\s#]*(?:{_SECRET_WORD})[^=&;\s#]*=)(?P<secret>[^&;\s#'\"]+)",
    re.I,
)
MASK = "***"


class SecretMasker:
    """A structlog processor replacing known secrets and URL passwords in every value."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        """The text with every secret replaced by ``***``."""
        text = URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
        text = QUERY_SECRET.sub(lambda m: m["head"] + MASK, text)
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> Any:
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = self.mask(value)
            elif not isinstance(value, int | float | bool | type(None)):
                event[key] = self.mask(str(value))
        return event


def configure_logging(level: str, fmt: str, secrets: Iterable[str] = ()) -> None:
    """Configure structlog (and the stdlib root logger, for libraries) once at start-up."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            SecretMasker(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True)
    # The worker owns reconnection; the library's "re-request the connection" is noise.
    logging.getLogger("pymysqlreplication").setLevel(logging.ERROR)
