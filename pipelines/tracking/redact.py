"""Credential filtering, and MLflow's length limits, for everything logged as a param or tag.

Credentials never reach MLflow: param and tag keys named like credentials
(``aws_secret_access_key``, ``HF_TOKEN``, ``db_password``, ``api_key``; not
``key_queue_size``, ``cls_token`` or ``num_tokens``) are dropped, and values that look
like credentials (AWS key ids, private keys, GitHub/Slack/HF tokens, JWTs, passwords in
URLs, long random mixed-case strings) are redacted. Environment variables are never logged.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__package__)  # "pipelines.tracking": one logger name for the whole package

MAX_PARAM_VALUE = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
MAX_TAG_VALUE = 8000
MAX_KEY = 250
REDACTED = "***REDACTED***"

_SECRET_WORDS = {"secret", "secrets", "password", "passwd", "passphrase", "credential",
                 "credentials", "apikey", "accesskey", "secretkey", "privatekey", "authorization",
                 "cookie", "sessionid"}
_KEY_QUALIFIERS = {"access", "api", "secret", "private", "auth", "session", "encryption", "signing",
                   "master", "ssh", "account", "license", "client", "storage", "service"}
_TOKEN_QUALIFIERS = {"access", "auth", "api", "bearer", "refresh", "session", "id", "hf", "github",
                     "gh", "gitlab", "slack", "oauth", "security", "personal", "bot", "mlflow",
                     "databricks", "wandb", "ray", "aws", "csrf", "huggingface", "tracking"}
_SECRET_VALUES = [re.compile(p) for p in (
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",                       # AWS access key id
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"\bgh[pousr]_[A-Za-z0-9]{30,}", r"\bgithub_pat_\w{30,}",
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}",                        # Slack
    r"\bhf_[A-Za-z0-9]{30,}", r"\bsk-[A-Za-z0-9_-]{20,}",
    r"\beyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]+",                # JWT
    r"(?i)\bbearer\s+[\w.~+/-]{16,}",
)]
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+(?=@)", re.IGNORECASE)
_RANDOM_TOKEN = re.compile(r"[A-Za-z0-9/+=_-]{32,256}")


def _words(key: str) -> list[str]:
    key = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)  # camelCase -> camel_Case
    return [w for w in re.split(r"[^A-Za-z0-9]+", key.lower()) if w]


def is_secret_key(key: str) -> bool:
    """Whether a param/tag/env name denotes a credential.

    ``secret``, ``password``, ``credentials``... anywhere; ``key`` after ``access``/``api``/
    ``private``/...; ``token`` after ``access``/``auth``/``hf``/...; and env-style names
    (``UPPER_CASE``) ending in ``_KEY`` or ``_TOKEN``. ``key_queue_size``, ``cls_token``,
    ``num_tokens`` are not credentials.
    """
    words = _words(key)
    if any(w in _SECRET_WORDS for w in words):
        return True
    last = re.split(r"[.:/]", key)[-1]
    env_like = bool(re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+", last))
    for i, word in enumerate(words):
        prev = words[i - 1] if i else ""
        if word == "key" and (prev in _KEY_QUALIFIERS or (env_like and i == len(words) - 1)):
            return True
        if word == "token" and (prev in _TOKEN_QUALIFIERS or len(words) == 1
                                or (env_like and i == len(words) - 1)):
            return True
    return False


def looks_like_secret(value: str) -> bool:
    """Whether a value looks like a credential (known token formats, or a long random string)."""
    if any(p.search(value) for p in _SECRET_VALUES):
        return True
    v = value.strip()
    if not _RANDOM_TOKEN.fullmatch(v):
        return False
    # A random mixed-case string (an AWS secret key) switches between upper case, lower
    # case and digits at ~60% of positions; paths and identifiers rarely at 25%. Hex
    # digests (fingerprints, commits, run ids) have no upper case at all.
    classes = [c.isupper() + 2 * c.isdigit() for c in v if c.isalnum()]
    switches = sum(a != b for a, b in itertools.pairwise(classes))
    return len(set(classes)) == 3 and switches > 0.25 * len(v)


def redact_value(value: str) -> str:
    """``value`` with URL passwords masked, or :data:`REDACTED` when it looks like a credential."""
    value = _URL_PASSWORD.sub(r"\g<head>***", value)
    return REDACTED if looks_like_secret(value) else value


def sanitize(items: Mapping[str, Any], max_value: int) -> dict[str, str]:
    """Drop credential keys, redact credential-like values, shorten long keys and values."""
    out: dict[str, str] = {}
    dropped = []
    for key, value in items.items():
        key = str(key)
        if is_secret_key(key):
            dropped.append(key)
            continue
        text = redact_value(value if isinstance(value, str) else json.dumps(value, default=str)
                            if isinstance(value, (list, tuple, dict)) else str(value))
        if len(text) > max_value:
            suffix = f"...[truncated {len(text)} chars]"
            text = text[: max_value - len(suffix)] + suffix
        if len(key) > MAX_KEY:
            key = key[: MAX_KEY - 9] + "~" + hashlib.sha1(key.encode()).hexdigest()[:8]
        out[key] = text
    if dropped:
        log.info("not logging %d credential-like keys: %s", len(dropped), ", ".join(sorted(dropped)))
    return out
