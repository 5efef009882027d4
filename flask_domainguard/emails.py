"""Parse and normalise email addresses; find the registrable domain behind them.

Everything else in flask-domainguard keys on two values computed here: the
*normalised address* (what is stored and compared) and the *registrable domain*
(the name a registry sells, from the ICANN section of the Public Suffix List),
which is what lapses and what an attacker buys.

:func:`parse_address` accepts what people type into a sign-up form:

* surrounding spaces are stripped (any Unicode space separator, e.g. the
  no-break space a copy from a web page brings along);
* upper case anywhere; a trailing dot on the domain (``user@example.com.``);
* Unicode domains, mapped by UTS #46 and encoded by IDNA 2008 to their A-label
  (``Bücher.example`` becomes ``xn--bcher-kva.example``), and A-labels, which must
  decode to a valid name;
* a dot-atom local part: RFC 5322 ``atext`` plus non-ASCII characters (RFC 6531);
  sending to a non-ASCII local part needs a mail server with SMTPUTF8.

Uniqueness is case-insensitive, as on PyPI and GitHub: the stored address has a
lower-cased (and NFC-normalised) local part, so ``Ann@x.com`` and ``ann@x.com``
are one address, and mail goes to the lower-cased form. Mailboxes that depend on
case are vanishingly rare; look-alike duplicate accounts are not.

Deliberate deviations from RFC 5321/5322. This is a security product, and each of
these syntaxes has been used to make two parsers (ours and a mail server's) see
two different addresses, so they are refused:

* quoted local parts (``"john doe"@example.com``, ``"a@b"@example.com``);
* comments (``(comment)user@example.com``) and folding white space, including
  CR/LF anywhere (header injection: ``a@b.com\\r\\nBcc: x@y.com``) and any other
  control character, even at the ends, where a plain space would be stripped;
* address literals (``user@[192.0.2.1]``, ``user@[IPv6:...]``) and domains with a
  purely numeric top label, such as a bare IPv4 address;
* the obsolete syntax of RFC 5322 section 4 (``"a".b@example.com``, spaces around dots);
* invisible format characters (zero-width space, bidi overrides) in the local part;
* a domain without a registrable part: one label (``user@localhost``) or a public
  suffix itself (``user@com``, ``user@co.uk``). No person owns such a domain,
  so there is nothing that could lapse and be bought back, nor any safe way to
  check it.

Nothing here looks anything up: a top-level domain unknown to the bundled PSL is
accepted like any other (as the PSL's own rules do), and whether a domain exists
is for the sweep to find out.

There is no limit on the whole address beyond its parts: the local part may have
64 octets (UTF-8) and the domain 253 characters in A-label form.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass

import idna
from publicsuffixlist import PublicSuffixList

__all__ = ["Address", "InvalidAddress", "parse_address", "registrable_domain"]

#: RFC 5322 ``atext`` other than letters and digits.
_ATEXT_SYMBOLS = frozenset("!#$%&'*+-/=?^_`{|}~")
_ASCII_LETTERS_DIGITS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")

#: Unicode category Zs (space separators). Written out because computing it means
#: walking every code point at import time; the test suite checks it against
#: :mod:`unicodedata`.
_SPACES = (
    "\u0020\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
)

#: Unicode categories refused in a local part: controls, format characters
#: (zero-width, bidi overrides), surrogates, private use, unassigned, separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})

_MAX_LOCAL_OCTETS = 64
_MAX_DOMAIN = 253
_MAX_LABEL = 63
#: Far above any valid address, even one padded with characters that UTS #46
#: ignores; it keeps pathological input out of the IDNA code and the caches.
_MAX_INPUT = 1024


class InvalidAddress(ValueError):
    """The text is not an email address we accept; ``str(exc)`` says why, for a user."""


class _BadHost(ValueError):
    """A host name fails validation; the message names the problem for a user."""


@dataclass(frozen=True)
class Address:
    """A parsed, normalised email address.

    :ivar normalized: the address as stored: ``local + "@" + domain``.
    :ivar local: the local part, lower-cased and NFC-normalised.
    :ivar domain: the host, lower-case A-label, without a trailing dot.
    :ivar registrable: the registrable domain of :attr:`domain` (ICANN section of
        the PSL); :func:`parse_address` refuses addresses without one, so it is
        only ``None`` on an :class:`Address` built by hand.
    """

    normalized: str
    local: str
    domain: str
    registrable: str | None


def _show(text: str, limit: int = 60) -> str:
    """Quote user input for an error message, cut short if it is long."""
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return f"'{text}'"


def _describe_control(char: str) -> str:
    if char in "\r\n\u2028\u2029\x85":
        return "a line break"
    if char == "\t":
        return "a tab"
    if char == "\x00":
        return "a NUL character"
    return f"a control character (U+{ord(char):04X})"


@functools.lru_cache(maxsize=1)
def _public_suffix_list() -> PublicSuffixList:
    # Parsing the bundled list takes tens of milliseconds: do it once, on first use.
    # only_icann: the private section lists names like github.io whose
    # subdomains are handed out by a company, not sold by a registry; what
    # lapses and can be bought is github.io itself.
    return PublicSuffixList(only_icann=True)


def _check_ascii_host(host: str, shown: str, *, converted: bool) -> str:
    """Validate an ASCII host and return it lower-cased, without a trailing dot.

    ``converted`` says the host is the A-label form of what the user typed, so
    length messages can say which form was measured.
    """
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host:
        raise _BadHost("The domain part is empty")
    if len(host) > _MAX_DOMAIN:
        form = " in its ASCII (punycode) form" if converted else ""
        raise _BadHost(f"The domain part is longer than {_MAX_DOMAIN} characters{form}")
    labels = host.split(".")
    for label in labels:
        if not label:
            raise _BadHost(
                f"The domain part {shown} has an empty label "
                "(two dots in a row, or a dot at the start)"
            )
        if len(label) > _MAX_LABEL:
            raise _BadHost(
                f"The domain part {shown} has a label longer than {_MAX_LABEL} characters"
            )
        if label[0] == "-" or label[-1] == "-":
            raise _BadHost(f"The domain part {shown} has a label that starts or ends with '-'")
        for char in label:
            if char not in _LDH:
                raise _BadHost(
                    f"The domain part {shown} contains {char!r}, which a domain name cannot contain"
                )
        if label[2:4] == "--":
            if not label.startswith("xn--"):
                # RFC 5891 4.2.3.1: "??--" is reserved for IDNA prefixes; the
                # idna package refuses it too, so both paths agree.
                raise _BadHost(
                    f"The domain part {shown} has a label with '--' as its third and "
                    "fourth characters, which is reserved for internationalised names"
                )
            try:
                # A-labels are checked by decoding: a fake or non-canonical
                # xn-- label would otherwise pass as plain ASCII.
                idna.ulabel(label)
            except (idna.IDNAError, ValueError) as exc:
                raise _BadHost(
                    f"The domain part {shown} has an invalid internationalised label "
                    f"{_show(label)} ({exc})"
                ) from None
    if labels[-1].isdigit():
        raise _BadHost(
            f"The domain part {shown} ends in a number, like an IP address: "
            "use the domain name of the mail server"
        )
    return host


@functools.lru_cache(maxsize=65536)
def _host_to_alabel(host: str) -> str:
    """Validate a host name and return its lower-case A-label form.

    Cached: real address lists share a few thousand hosts. Failures raise
    :class:`_BadHost` and are not cached.
    """
    shown = _show(host)
    if host.startswith("[") or host.endswith("]"):
        raise _BadHost(
            f"The domain part {shown} is an address literal: use a domain name, such as example.com"
        )
    if host.isascii():
        # Fast path, equivalent to idna.encode(host, uts46=True) for ASCII
        # (the test suite checks that) and several times quicker.
        return _check_ascii_host(host, shown, converted=False)
    for char in host:
        if unicodedata.category(char) in {"Zs", "Zl", "Zp", "Cc"}:
            raise _BadHost(f"The domain part {shown} contains a space or control character")
    # This is idna.encode(host, uts46=True) spelt out label by label, so that
    # structural and length problems get the same plain messages as ASCII hosts.
    try:
        mapped = idna.uts46_remap(host, std3_rules=False)
    except (idna.IDNAError, ValueError) as exc:
        raise _BadHost(f"The domain part {shown} is not a valid domain name ({exc})") from None
    labels = mapped.split(".")  # UTS 46 has mapped the ideographic full stops to "."
    for index, label in enumerate(labels):
        if label.isascii():
            continue  # empty or plain labels: checked with the result below
        if label[0] == "-" or label[-1] == "-":
            raise _BadHost(f"The domain part {shown} has a label that starts or ends with '-'")
        try:
            labels[index] = idna.alabel(label).decode("ascii")
        except (idna.IDNAError, ValueError) as exc:
            if len(label.encode("punycode")) + 4 > _MAX_LABEL:
                raise _BadHost(
                    f"The domain part {shown} has a label longer than {_MAX_LABEL} characters "
                    "in its ASCII (punycode) form"
                ) from None
            # idna's own wording names the offending code point and position.
            raise _BadHost(f"The domain part {shown} is not a valid domain name ({exc})") from None
    encoded = ".".join(labels)
    return _check_ascii_host(encoded, shown, converted=True)


def _check_local(local: str) -> str:
    """Validate a dot-atom local part and return its stored form."""
    # NFC, lower, NFC: one pass of lower() can leave a decomposed sequence that
    # NFC would compose, and the stored form must re-parse to itself.
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFC", local).lower())
    for char in folded:
        if char in _ASCII_LETTERS_DIGITS or char in _ATEXT_SYMBOLS or char == ".":
            continue
        if char == '"':
            raise InvalidAddress(
                'Quoted local parts (like "john doe"@example.com) are not accepted: '
                "use an address without quotation marks"
            )
        if char in "()":
            raise InvalidAddress("Comments in parentheses are not accepted: remove the part in ( )")
        if char in _SPACES:
            raise InvalidAddress("The part before '@' contains a space")
        if char.isascii():
            what = "a backslash" if char == "\\" else f"'{char}'"
            raise InvalidAddress(
                f"The part before '@' contains {what}, which an email address cannot contain"
            )
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise InvalidAddress(
                f"The part before '@' contains an invisible or unassigned character "
                f"(U+{ord(char):04X})"
            )
    if folded.startswith("."):
        raise InvalidAddress("The part before '@' starts with a dot")
    if folded.endswith("."):
        raise InvalidAddress("The part before '@' ends with a dot")
    if ".." in folded:
        raise InvalidAddress("The part before '@' contains two dots in a row")
    octets = len(folded.encode("utf-8"))
    if octets > _MAX_LOCAL_OCTETS:
        if folded.isascii():
            raise InvalidAddress(
                f"The part before '@' is longer than {_MAX_LOCAL_OCTETS} characters"
            )
        raise InvalidAddress(
            f"The part before '@' is longer than {_MAX_LOCAL_OCTETS} bytes in UTF-8 "
            "(a non-ASCII character takes 2 to 4)"
        )
    return folded


def parse_address(raw: str) -> Address:
    """Parse and normalise an email address typed by a person.

    :param raw: the address as entered; surrounding spaces are ignored.
    :returns: the normalised :class:`Address`.
    :raises InvalidAddress: with a message that tells the user what to fix.
    """
    if raw is None:
        # A missing form field is the commonest source of None; say it plainly.
        raise InvalidAddress("Enter an email address")
    if not isinstance(raw, str):
        raise TypeError(f"parse_address() expects str, not {type(raw).__name__}")
    text = raw.strip(_SPACES)
    if not text:
        raise InvalidAddress("Enter an email address")
    if len(text) > _MAX_INPUT:
        raise InvalidAddress("The address is far too long to be an email address")
    for char in text:
        # Checked before anything else: a CR/LF is an injection attempt, not a typo,
        # and no other message should hide it.
        if unicodedata.category(char) == "Cc" or char in "\u2028\u2029":
            raise InvalidAddress(f"The address contains {_describe_control(char)}")
    ats = text.count("@")
    if ats == 0:
        raise InvalidAddress("The address has no '@'")
    if ats > 1:
        raise InvalidAddress("The address has more than one '@'")
    local, _, host = text.partition("@")
    if not local:
        raise InvalidAddress("The part before '@' is empty")
    if not host:
        raise InvalidAddress("The part after '@' is empty: add the domain, such as example.com")
    stored_local = _check_local(local)

    if any(char in _SPACES for char in host):
        raise InvalidAddress(f"The domain part {_show(host)} contains a space")
    try:
        domain = _host_to_alabel(host)
    except _BadHost as exc:
        raise InvalidAddress(str(exc)) from None
    if "." not in domain:
        raise InvalidAddress(
            f"The domain {_show(domain)} has no dot: use the full domain name, such as example.com"
        )
    registrable = _public_suffix_list().privatesuffix(domain)
    if registrable is None:
        raise InvalidAddress(
            f"The domain {_show(domain)} is a public suffix, shared by many owners: "
            "use the full domain of your mail provider"
        )
    return Address(
        normalized=f"{stored_local}@{domain}",
        local=stored_local,
        domain=domain,
        registrable=registrable,
    )


def registrable_domain(name: str) -> str | None:
    """Return the registrable domain of a host name or an email address.

    The registrable domain is the public suffix plus one label, by the ICANN
    section of the Public Suffix List: the name a registry sells
    (``foo.github.io`` gives ``github.io``, ``a.b.example.co.uk`` gives
    ``example.co.uk``). For an address, the part after the last ``@`` is used.
    Unicode and upper case are accepted; one trailing dot is ignored.

    :param name: a host name or an email address.
    :returns: the lower-case A-label registrable domain, or ``None`` for a public
        suffix itself, an empty or invalid name (a leading dot, an empty label,
        spaces), or an IP address.
    """
    if not isinstance(name, str):
        # Rows imported by ``adopt`` can hold NULL; there is no domain to find.
        return None
    host = name.rpartition("@")[2]
    if len(host) > _MAX_INPUT:
        return None
    return _registrable_host(host)


@functools.lru_cache(maxsize=65536)
def _registrable_host(host: str) -> str | None:
    try:
        alabel = _host_to_alabel(host)
    except _BadHost:
        return None
    return _public_suffix_list().privatesuffix(alabel)
