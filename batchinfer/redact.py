"""Text made safe to write where others read it: secrets masked, one line per item.

Everything batchinfer writes about items and errors (failed_items.txt, errors.jsonl,
the journal, job.log, summary.json, the one-line errors on stderr) passes through here:

- :func:`redact_url` masks the password of a URL (``http://user:***@host/...``) and the
  values of secret query parameters (``X-Amz-Signature=***``, ``sig=***``, ``token=***``),
  keeping the scheme, host, path and the names of the parameters, so the URL stays
  recognisable; :func:`redact_text` does the same to every URL found in free text, and to
  query strings that an error shows without their URL (``bucket/f.txt?sig=***``);
  :func:`redact_mapping` masks the values of secret keys of a mapping (``storage_options``,
  environment variables) and the URLs in the others.
- :func:`escape_item` makes a name one line, reversibly: ``\\\\``, ``\\n``, ``\\r``, ``\\t``,
  ``\\xNN`` for a byte that is not UTF-8 (a file name's surrogate escape) or an ASCII control
  character, ``\\uNNNN`` for other line breaks and control characters. :func:`one_line` does
  the same for messages, leaving backslashes alone (they are read by people, not parsed).
- :func:`for_log` is both: what a log line, a summary field or an error on stderr gets.
- :func:`register_secrets` adds known secret values (of ``storage_options`` keys that name a
  credential, of environment variables whose names do: :func:`secret_values`) to a process-wide
  set; :func:`redact_text`, and so everything above, replaces each of them by ``***`` wherever it
  appears, URL or not. The coordinator registers them from the spec and its environment, the
  workers from ``WorkerConfig.secret_values``.

Which values are masked, and where: a value of :data:`MIN_SECRET_LENGTH` (6) characters or more
wherever it appears; a shorter one of at least :data:`MIN_TOKEN_SECRET_LENGTH` (4) only where it
stands as a whole token (between the start or end of the text, white space, quotes, ``=``, ``:``,
``,``, ``;``, ``&``), so a 4-character password is masked in ``PASSWORD=ab12`` but ``ab12`` inside a
longer word stays. Never masked: values of 1 to 3 characters, numbers of fewer than 6 digits, and
words that name a mode rather than hold a credential (``true``, ``false``, ``null``, ``none``, gcsfs's
``anon``, ``cache``, ``cloud``...): they appear in ordinary text (counts, ports, JSON), which masking
would garble, and are no credential of a store (keys, tokens and passwords are 16+ characters).

Redaction is idempotent: masking masked text changes nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"

# names of query parameters and mapping keys whose values are secrets (case-insensitive):
# whole names, and fragments that make any name secret (X-Amz-Signature, sas_token, account_key...)
_SECRET_NAMES = {"sig", "key", "pwd", "pass", "auth", "authorization", "sas", "code", "awsaccesskeyid"}
_SECRET_FRAGMENT = re.compile(
    r"signature|token|secret|passw|credential|api[-_]?key|access[-_]?key|account[-_]?key|"
    r"private[-_]?key|sharedaccess|connection[-_]?str|session",
    re.IGNORECASE,
)
# whole '_'-separated words of an environment variable's name that make its value a secret:
# AWS_SECRET_ACCESS_KEY, MY_API_TOKEN, AZURE_STORAGE_CONNECTION_STRING, DB_PWD; not PARTITION_KEYS, KEYBOARD
_SECRET_ENV_WORDS = {"KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "PWD", "SAS", "CREDENTIAL", "CREDENTIALS",
                     "SIGNATURE", "APIKEY", "PASSPHRASE"}
_SECRET_ENV_PAIRS = {("CONNECTION", "STRING"), ("ACCESS", "KEY"), ("ACCOUNT", "KEY"), ("CLIENT", "SECRET")}
# environment variables named like secrets that hold none (a path, a name): their values stay readable
_NOT_SECRET_ENV = {"PWD", "OLDPWD"}
# a registered value this long is masked wherever it appears; a shorter one (from
# MIN_TOKEN_SECRET_LENGTH) only as a whole token; shorter still, never (see the module's docstring)
MIN_SECRET_LENGTH = 6
MIN_TOKEN_SECRET_LENGTH = 4
# values of credential keys that are modes, not secrets (gcsfs's token=, flags): never masked when short
_ORDINARY_VALUES = {"true", "false", "null", "none", "anon", "cache", "cloud", "local"}
# what delimits a whole token for a short secret
_TOKEN_EDGE = r"""\s'"=:,;&"""
_secrets: set[str] = set()
_secrets_pattern: re.Pattern | None = None
# a URL in free text: a scheme, then everything up to white space or a quote
# (a last ')', '.', ',' ... closes the sentence, not the URL)
_URL = re.compile(r"""\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'"<>`]*[^\s'"<>`)\].,:;!]""")
# a parameter of a query string (or of a connection string): after '?', '&' or ';'
# (its value ends before a ':', '.' or '!' that ends the sentence: "...&sig=abc: 403 Forbidden")
_PARAM = re.compile(r"""(?<=[?&;])([^=&;#?\s'"<>]+)=((?:[^&;#\s'"<>()\[\]{},]*[^&;#\s'"<>()\[\]{},.:!])?)""")
# secrets of connection strings (Azure: "AccountKey=...;"), found outside URLs too
_CONNECTION_SECRET = re.compile(r"\b(AccountKey|SharedAccessKey|SharedAccessSignature|Password|Pwd)=([^;&\s'\"]+)")
# what makes a line break, or is invisible, in a text file (str.splitlines breaks on all of these)
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_UNSAFE_OR_BACKSLASH = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def is_secret_name(name: str) -> bool:
    """Whether a query parameter or mapping key named ``name`` holds a secret."""
    return name.lower() in _SECRET_NAMES or bool(_SECRET_FRAGMENT.search(name))


def is_secret_env_name(name: str) -> bool:
    """Whether an environment variable named ``name`` holds a credential: one of its ``_``-separated
    words (any case) is KEY, SECRET, TOKEN, PASSWORD, PWD, SAS, CREDENTIAL(S)..., or two are
    CONNECTION_STRING. ``AWS_SECRET_ACCESS_KEY`` and ``MY_API_TOKEN`` are; ``PARTITION_KEYS`` and
    ``KEYBOARD`` are not (the word must be whole); ``PWD``, the shell's current folder, is not."""
    if name.upper() in _NOT_SECRET_ENV:
        return False
    words = [w for w in name.upper().split("_") if w]
    return bool(set(words) & _SECRET_ENV_WORDS) or any(pair in _SECRET_ENV_PAIRS for pair in zip(words, words[1:]))


def secret_values(storage_options: Iterable[Mapping[str, Any]] = (), environments: Iterable[Mapping[str, str]] = ()
                  ) -> tuple[str, ...]:
    """The secret values of ``storage_options`` mappings (values of keys :func:`is_secret_name` names,
    nested mappings walked; a connection string's AccountKey is found by :func:`redact_text` too) and of
    environments (values of variables :func:`is_secret_env_name` names), long enough to mask, sorted."""
    found: set[str] = set()

    def walk(mapping: Mapping[str, Any]) -> None:
        for key, value in mapping.items():
            if isinstance(value, Mapping):
                walk(value)
            elif isinstance(value, str) and is_secret_name(str(key)):
                found.add(value)

    for options in storage_options:
        walk(options)
    for environment in environments:
        found.update(value for name, value in environment.items() if is_secret_env_name(name))
    # a connection string's own secrets, which a script may print alone (AZURE_STORAGE_KEY...)
    found.update(m.group(2) for text in list(found) for m in _CONNECTION_SECRET.finditer(text))
    return tuple(sorted(v for v in found if maskable(v)))


def maskable(value: str) -> bool:
    """Whether ``value`` is masked at all (see the module's docstring: long enough, not a short number
    or an ordinary word)."""
    if len(value) >= MIN_SECRET_LENGTH:
        return True
    return (len(value) >= MIN_TOKEN_SECRET_LENGTH and not value.isdigit()
            and value.lower() not in _ORDINARY_VALUES)


def secrets_pattern(values: Iterable[str], as_bytes: bool = False) -> re.Pattern | None:
    """One regex finding ``values`` (their UTF-8 bytes with ``as_bytes``): the long ones anywhere,
    the short ones as whole tokens (see the module's docstring); longest first, so a secret that
    contains another is masked whole. None when no value is maskable."""
    chosen = sorted({v for v in values if isinstance(v, str) and maskable(v)}, key=len, reverse=True)
    if not chosen:
        return None
    parts = []
    for value in chosen:
        escaped = re.escape(value)
        if len(value) < MIN_SECRET_LENGTH:
            escaped = f"(?<![^{_TOKEN_EDGE}]){escaped}(?![^{_TOKEN_EDGE}])"
        parts.append(escaped)
    text = "|".join(parts)
    return re.compile(text.encode("utf-8", "surrogateescape")) if as_bytes else re.compile(text)


def register_secrets(values: Iterable[str]) -> None:
    """Mask ``values`` (those :func:`maskable`) in everything :func:`redact_text` cleans, in this
    process, from now on; registering twice is harmless."""
    global _secrets_pattern
    new = {v for v in values if isinstance(v, str) and maskable(v)} - _secrets
    if not new:
        return
    _secrets.update(new)
    _secrets_pattern = secrets_pattern(_secrets)


def registered_secrets() -> tuple[str, ...]:
    """The values :func:`register_secrets` was given (those maskable), for a worker's config."""
    return tuple(sorted(_secrets))


def mask_secrets(text: str) -> str:
    """``text`` with every registered secret value replaced by ``***`` (nothing else changed)."""
    return _secrets_pattern.sub(MASK, text) if _secrets_pattern is not None else text


def _mask_params(text: str) -> str:
    """``a=1&sig=xyz`` -> ``a=1&sig=***``: each parameter kept in place, secret values masked."""
    return _PARAM.sub(lambda m: f"{m[1]}={MASK}" if m[2] and is_secret_name(m[1]) else m[0], text)


def _userinfo_end(rest: str) -> int:
    """Where the userinfo of a URL (the text after ``scheme://``) ends, at its ``@``; -1 if none.

    A password may hold an unencoded ``/`` (AWS secrets do: ``s3://KEY:abc/def@bucket``),
    so ``user:...@`` counts even past a ``/``, unless the colon starts a port (``host:8080/``).
    """
    stop = len(rest)
    for mark in "?#":
        if mark in rest:
            stop = min(stop, rest.index(mark))
    slash = rest.find("/", 0, stop)
    authority = rest[: slash if slash >= 0 else stop]
    if "@" in authority:
        return authority.rindex("@")
    user, colon, after = authority.partition(":")
    if colon and not after.isdigit() and "@" in rest[:stop]:
        return rest.index("@", len(authority))
    return -1


def redact_url(url: str) -> str:
    """``url`` with its password, secret query values and registered secrets replaced by ``***``."""
    url = mask_secrets(url)
    scheme, sep, rest = url.partition("://")
    if sep:
        at = _userinfo_end(rest)
        if at >= 0:
            user, colon, _ = rest[:at].partition(":")
            # a lone user name is often a token (https://TOKEN@host): masked whole
            url = f"{scheme}://" + (f"{user}:{MASK}" if colon else MASK) + rest[at:]
    return _mask_params(url) if "=" in url else url


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (see :func:`redact_url`), and the secret parameters of
    query strings and connection strings that appear without their URL (a path an error names),
    and every registered secret value (see :func:`register_secrets`)."""
    if _secrets_pattern is not None:
        text = _secrets_pattern.sub(MASK, text)
    if "://" in text:
        text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    if "=" in text:
        text = _CONNECTION_SECRET.sub(lambda m: f"{m.group(1)}={MASK}", _mask_params(text))
    return text


def redact_mapping(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``mapping`` (e.g. storage_options, environment) safe to print or log.

    Values of secret keys become ``***``; other strings have their URLs redacted; nested
    mappings and lists are walked.
    """
    return {key: _redact_value(value, is_secret_name(str(key))) for key, value in mapping.items()}


def _redact_value(value: Any, secret: bool) -> Any:
    if isinstance(value, Mapping):
        return redact_mapping(value)
    if isinstance(value, (list, tuple)):
        return [_redact_value(v, secret) for v in value]
    if secret and value not in (None, "", True, False):
        return MASK
    return redact_text(value) if isinstance(value, str) else value


def _escape_char(match: re.Match) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogate escape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def escape_item(text: str) -> str:
    """One line, reversibly: backslash escapes for ``\\``, line breaks, control characters, bad bytes.

    ``\\xNN`` is always the byte NN of the original name (non-UTF-8 bytes and ASCII
    controls), ``\\uNNNN`` a code point, so the name's bytes can be recovered exactly.
    """
    return _UNSAFE_OR_BACKSLASH.sub(_escape_char, text)


def one_line(text: str) -> str:
    """``text`` on one line, for people: line breaks, control characters and bad bytes escaped."""
    return _UNSAFE.sub(_escape_char, text)


def for_log(text: str) -> str:
    """What a log line, a summary field or a one-line error may show of ``text``."""
    return one_line(redact_text(text))


def json_safe(text: str) -> str:
    """``text`` redacted, with bytes that were not UTF-8 as ``\\xNN`` (JSON cannot hold them)."""
    return re.sub(r"[\ud800-\udfff]", _escape_char, redact_text(text))


class RedactingFilter(logging.Filter):
    """A handler filter: each record's message redacted, and on one line unless ``one_line`` is False
    (a worker's log, where a message may carry a traceback); a record's traceback is redacted too."""

    def __init__(self, one_line: bool = True) -> None:
        super().__init__()
        self.clean = for_log if one_line else redact_text

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message in place; never drop a record."""
        record.msg = self.clean(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(_FORMATTER.formatException(record.exc_info))
        return True


_FORMATTER = logging.Formatter()
