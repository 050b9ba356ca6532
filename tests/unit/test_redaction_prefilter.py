"""The redactor's one-pass prefilter never lets a secret through that a pattern would mask."""

from __future__ import annotations

import re
import string

from hypothesis import given
from hypothesis import strategies as st

from corestone.observability.redaction import _DEFAULT_PATTERNS, SecretRedactor

_SPACE_COLON_EQUALS = re.compile(r"[\s:=]")
# The characters the patterns look for, minus the three the prefilter requires.
_NEAR_MISSES = [
    "-----BEGIN RSA PRIVATE KEY-----",
    "https//user",
    "Bearer",
    "bearer\u00a0tok",  # a no-break space is whitespace to the patterns and to the filter
    "authorization",
    "cookie",
    "set-cookie",
    "password",
    "db_password",
    "api-key",
    "secret_access_key",
    "@",
    "'",
    '"',
    ";",
]
_ALPHABET = "".join(c for c in string.printable if not _SPACE_COLON_EQUALS.match(c))


@given(
    st.lists(
        st.one_of(st.sampled_from(_NEAR_MISSES), st.text(alphabet=_ALPHABET, max_size=12)),
        max_size=8,
    ).map("".join)
)
def test_no_default_pattern_matches_a_text_the_prefilter_skips(text: str) -> None:
    """Without whitespace, ':' or '=' no default pattern matches, so skipping them is exact."""
    if _SPACE_COLON_EQUALS.search(text) is not None:
        return  # the prefilter scans it: every pattern runs as before
    assert all(pattern.search(text) is None for pattern in _DEFAULT_PATTERNS)
    assert SecretRedactor().redact_text(text) == text


@given(st.text(max_size=40))
def test_the_prefilter_decides_nothing_for_texts_that_may_hold_a_secret(text: str) -> None:
    """On any text, the redactor's answer equals every pattern applied in order."""
    expected = text
    for pattern in _DEFAULT_PATTERNS:
        expected = pattern.sub(lambda m: _keep(m), expected)
    assert SecretRedactor()._scan(text) == expected


def _keep(match: re.Match[str]) -> str:
    groups = match.groupdict()
    return (groups.get("keep") or "") + (groups.get("scheme") or "") + "***"


def test_extra_patterns_still_run_on_texts_without_space_colon_or_equals() -> None:
    """A project's own pattern is applied even where the defaults are skipped."""
    redactor = SecretRedactor(extra_patterns=[r"sk_live_\w+"])
    assert redactor.redact_text("/pay/sk_live_abc123") == "/pay/***"


def test_a_request_id_is_left_as_it_is_and_a_bearer_token_is_still_masked() -> None:
    """The two texts of an access line: an id passes through, a token in a path does not."""
    redactor = SecretRedactor()
    assert redactor.redact_text("0f1e2d3c4b5a69788796a5b4c3d2e1f0") == (
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    )
    assert redactor.redact_text("/x?access_token=abc") == "/x?access_token=***"
