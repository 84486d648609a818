"""The one retry policy of the product: a bounded number of attempts with exponential backoff.

Built on tenacity; callers name what is worth retrying (transport failures, overloaded servers),
never a verdict on the request itself.
"""

from __future__ import annotations

from typing import Any

import structlog
import tenacity

log = structlog.get_logger(__name__)


def _log_retry(what: str) -> Any:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            f"{what} failed; retrying",
            attempt=state.attempt_number,
            wait_s=round(state.upcoming_sleep, 3),
            problem=f"{type(error).__name__}: {error}" if error is not None else None,
        )

    return before_sleep


def backoff(
    what: str,
    *,
    retries: int,
    backoff_s: float,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying`` / ``AsyncRetrying``: ``retries`` attempts after
    the first, waiting ``backoff_s``, then twice that, and so on; the last error is re-raised."""
    return {
        "stop": tenacity.stop_after_attempt(retries + 1),
        "wait": tenacity.wait_exponential(multiplier=backoff_s, min=0, max=60),
        "retry": tenacity.retry_if_exception_type(retry_on),
        "reraise": True,
        "before_sleep": _log_retry(what),
    }


def until_up(
    what: str,
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    wait_s: float,
    backoff_s: float,
    max_poll_s: float = 1.0,
) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying``: poll a server that may still be booting (compose
    starts everything at once) while it raises ``retry_on``, for up to ``wait_s``, every
    ``backoff_s`` doubling up to ``max_poll_s``; the last error is re-raised."""
    return {
        "stop": tenacity.stop_before_delay(wait_s),
        "wait": tenacity.wait_exponential(multiplier=backoff_s, max=max_poll_s),
        "retry": tenacity.retry_if_exception_type(retry_on),
        "reraise": True,
        "before_sleep": _log_retry(what),
    }
