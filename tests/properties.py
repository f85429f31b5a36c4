"""How many examples a property test tries: its full count, or a tenth of it in `make unit`.

`make unit` runs with ``--hypothesis-profile=quick`` so an edit-test loop takes seconds;
`make test` (and CI) run every property test at its full count.
"""

from __future__ import annotations

from hypothesis import settings

QUICK_PROFILE = "quick"
settings.register_profile(QUICK_PROFILE, max_examples=10)


def examples(full: int) -> int:
    """``full`` normally; a tenth of it (at least 10) under the quick profile."""
    quick = settings.get_profile(QUICK_PROFILE)
    if settings.default.max_examples == quick.max_examples:
        return max(10, full // 10)
    return full
