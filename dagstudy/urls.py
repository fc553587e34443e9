"""Secrets in URLs: find them (a study file must not hold one literally) and hide them in output.

A URL's secrets are the password of ``scheme://user:password@`` (SQLAlchemy's rule: everything
up to the first ``@``) and the values of password-like query parameters (``password``,
``passwd``, ``pwd``, ``token``, ``secret``). A secret written as one ``${VAR}`` reference is
not literal; a ``${VAR:-fallback}`` is.
"""

from __future__ import annotations

import re

# A URL's secrets: the password of ``scheme://user:password@`` (SQLAlchemy's rule: everything
# up to the first ``@``) and the values of password-like query parameters.
_URL_PASSWORD = re.compile(r"^([\w+.-]+://[^:/@]*:)([^@]*)(@)")
_URL_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd|token|secret)=)([^&#]*)()")
_ENV_ONLY = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


def _url_secrets(url: str) -> list[str]:
    return [m.group(2) for pattern in (_URL_PASSWORD, _URL_QUERY_SECRET)
            for m in pattern.finditer(url)]


def has_literal_secret(url: str) -> bool:
    """A secret of ``url`` is anything but one ``${VAR}`` reference (a fallback is literal)."""
    return any(secret and not _ENV_ONLY.fullmatch(secret) for secret in _url_secrets(url))


def redact_url(url: str) -> str:
    """``url`` fit for logs: its password and password-like query values replaced by ``***``."""
    for pattern in (_URL_PASSWORD, _URL_QUERY_SECRET):
        url = pattern.sub(lambda m: m.group(1) + "***" + m.group(3), url)
    return url
