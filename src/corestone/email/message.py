"""A typed email message, validated and normalised before anything stores or sends it.

Everything a provider would later choke on, or an attacker would use, is refused here,
with an :class:`~corestone.errors.InvalidInputError` naming the field and the rule:

- addresses go through email-validator (internationalised ones included: the domain is
  kept in Unicode and its IDNA form is what goes on the wire; a non-ASCII local part
  needs SMTPUTF8, which :attr:`EmailMessage.needs_smtputf8` reports);
- a CR or LF in any header, display name, subject, tag, metadata value or file name is
  refused, so no input can add a header (``Bcc:``) or end the header block;
- custom headers may not replace the ones this message owns (From, To, Subject, …);
- recipients, subject, attachments, headers, tags and metadata have limits
  (:class:`EmailLimits`), checked on the whole message.

The message is plain data: :meth:`EmailMessage.to_stored` / :meth:`EmailMessage.from_dict`
are what the outbox stores and reads back, and :meth:`EmailMessage.to_mime` is the
RFC 5322 form the SMTP and file providers send.

A stored message carries a digest of its own content (``check``). Reading it back, a
matching digest means the data is exactly what a validated message wrote, so it is
rebuilt as it is instead of going through email-validator again (the most expensive
part of delivering a message); any other data (edited by hand, written by other code,
or without a digest) is validated in full, as :meth:`EmailMessage.build` does. The
digest is not a secret: whoever can write the outbox can forge one, but such a writer
could as well store any valid message, so validating again never stopped them; and
every provider refuses a line break in any header field on every send (``guard`` in
``providers/_common.py``), so no stored message can inject a header either way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.headerregistry import Address as MimeAddress
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage as MimeMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import formatdate, make_msgid
from types import MappingProxyType
from typing import Any, Final, cast

from corestone._extras import requires_extra
from corestone.errors import InvalidInputError

with requires_extra(__name__, "email"):
    import email_validator

__all__ = [
    "DEFAULT_LIMITS",
    "Address",
    "Attachment",
    "EmailLimits",
    "EmailMessage",
]

# CR, LF and NUL, and every other character str.splitlines() breaks on: Python's email
# package refuses them all in a header value, so a message holding one (a U+2028 in a
# task title) would be accepted here and then fail at every provider as unencodable.
_LINE_BREAK: Final = re.compile(r"[\r\n\x00\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_HEADER_NAME: Final = re.compile(r"[!-9;-~]{1,76}")  # printable ASCII but ':' (RFC 5322)
_RESERVED_HEADERS: Final = frozenset(
    h.lower()
    for h in (
        "From", "To", "Cc", "Bcc", "Reply-To", "Subject", "Date", "Message-ID", "Sender",
        "MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Return-Path",
        "DKIM-Signature", "Received",
    )
)  # fmt: skip
_TAG: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, making each header class once instead of per header.

    ``HeaderRegistry.__getitem__`` creates a new class (``type(...)``) every time a
    header is set or parsed: nearly half the time of building a small message. The
    classes it makes for one name are interchangeable, so the first is kept.
    """

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made


_SMTP_POLICY: Final = SMTP.clone(header_factory=_HeaderClasses())
_SMTPUTF8_POLICY: Final = SMTPUTF8.clone(header_factory=_HeaderClasses())


def _invalid(field_name: str, rule: str, message: str) -> InvalidInputError:
    return InvalidInputError(f"{field_name}: {message}", field=field_name, rule=rule)


def _single_line(value: object, field_name: str) -> str:
    if not isinstance(value, str):
        raise _invalid(field_name, "type", "must be a string")
    if _LINE_BREAK.search(value):
        raise _invalid(field_name, "no_line_breaks", "must not contain CR, LF or NUL")
    return value


@dataclass(frozen=True, slots=True)
class EmailLimits:
    """How big a message may be. The defaults fit every provider corestone ships."""

    max_recipients: int = 50
    """to + cc + bcc of one message (SES and Mailgun allow 50 per message; bulk sends
    give each recipient a message of its own)."""
    max_subject_length: int = 500
    max_attachments: int = 20
    max_attachment_bytes: int = 10 * 1024 * 1024
    max_total_bytes: int = 20 * 1024 * 1024
    """Bodies and attachments together, before encoding (SES' limit is 40 MB encoded)."""
    max_headers: int = 30
    max_header_value_length: int = 998  # RFC 5322's line limit
    max_tags: int = 10
    max_metadata_entries: int = 20
    max_metadata_value_length: int = 1000


DEFAULT_LIMITS: Final = EmailLimits()


@dataclass(frozen=True, slots=True)
class Address:
    """A normalised address and an optional display name."""

    email: str
    name: str = ""

    @classmethod
    def parse(cls, value: str | Address | tuple[str, str], *, field_name: str) -> Address:
        """Validate and normalise: ``"a@b.org"``, ``("Name", "a@b.org")`` or an Address.

        The domain is lower-cased (and kept in Unicode); the local part is kept as
        written, as servers may treat it case-sensitively.
        """
        if isinstance(value, Address):
            email, name = value.email, value.name
        elif isinstance(value, tuple) and len(value) == 2:
            name, email = value
        elif isinstance(value, str):
            email, name = value, ""
        else:
            raise _invalid(field_name, "type", "must be an address string or (name, address)")
        _single_line(name, f"{field_name}.name")
        _single_line(email, field_name)
        try:
            checked = email_validator.validate_email(
                email, check_deliverability=False, allow_smtputf8=True
            )
        except email_validator.EmailNotValidError as exc:
            raise _invalid(field_name, "email", str(exc)) from None
        return cls(email=checked.normalized, name=name.strip())

    @property
    def needs_smtputf8(self) -> bool:
        """A non-ASCII local part can only travel over SMTPUTF8 (RFC 6531)."""
        return not self.email.partition("@")[0].isascii()

    @property
    def ascii_email(self) -> str:
        """The address with its domain in IDNA (``xn--``) form, for ASCII-only transports."""
        local, _, domain = self.email.rpartition("@")
        return f"{local}@{domain.encode('idna').decode('ascii')}"

    def formatted(self, *, ascii_domain: bool = False) -> str:
        """``Name <a@b.org>`` (the name quoted or RFC 2047 encoded as a header needs)."""
        local, _, domain = (self.ascii_email if ascii_domain else self.email).rpartition("@")
        if not self.name:
            return f"{local}@{domain}"
        return str(MimeAddress(display_name=self.name, username=local, domain=domain))


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file attached to the message; with a ``content_id`` it is an inline image."""

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"
    content_id: str | None = None

    @property
    def inline(self) -> bool:
        return self.content_id is not None


_CONTENT_TYPE: Final = re.compile(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*", re.IGNORECASE)
_CONTENT_ID: Final = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~@-]{1,200}")


def _attachment(value: Attachment, index: int, limits: EmailLimits) -> Attachment:
    where = f"attachments[{index}]"
    if not isinstance(value, Attachment):
        raise _invalid(where, "type", "must be an Attachment")
    name = _single_line(value.filename, f"{where}.filename").strip()
    if not name or "/" in name or "\\" in name or len(name) > 255:
        raise _invalid(f"{where}.filename", "filename", "must be 1-255 characters, no path")
    if not _CONTENT_TYPE.fullmatch(value.content_type):
        raise _invalid(f"{where}.content_type", "content_type", "must be a type/subtype")
    if value.content_id is not None and not _CONTENT_ID.fullmatch(value.content_id):
        raise _invalid(f"{where}.content_id", "content_id", "must be a plain token")
    if not isinstance(value.content, bytes | bytearray):
        raise _invalid(f"{where}.content", "type", "must be bytes")
    if len(value.content) > limits.max_attachment_bytes:
        raise _invalid(
            f"{where}.content", "max_bytes", f"is larger than {limits.max_attachment_bytes} bytes"
        )
    return Attachment(name, bytes(value.content), value.content_type.lower(), value.content_id)


@dataclass(frozen=True, slots=True)
class EmailMessage:
    """One message, valid by construction when made with :meth:`build`."""

    sender: Address
    to: tuple[Address, ...]
    subject: str
    text: str | None = None
    html: str | None = None
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    idempotency_key: str | None = None

    @classmethod
    def build(
        cls,
        *,
        sender: str | Address | tuple[str, str],
        to: Iterable[str | Address | tuple[str, str]] | str,
        subject: str,
        text: str | None = None,
        html: str | None = None,
        cc: Iterable[str | Address | tuple[str, str]] = (),
        bcc: Iterable[str | Address | tuple[str, str]] = (),
        reply_to: Iterable[str | Address | tuple[str, str]] = (),
        attachments: Iterable[Attachment] = (),
        headers: Mapping[str, str] | None = None,
        tags: Iterable[str] = (),
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        limits: EmailLimits = DEFAULT_LIMITS,
    ) -> EmailMessage:
        """Validate and normalise everything; raise InvalidInputError naming the field."""

        def addresses(values: Any, name: str) -> tuple[Address, ...]:
            items = [values] if isinstance(values, str | Address) else list(values)
            return tuple(Address.parse(v, field_name=f"{name}[{i}]") for i, v in enumerate(items))

        to_list, cc_list, bcc_list = addresses(to, "to"), addresses(cc, "cc"), addresses(bcc, "bcc")
        if not to_list:
            raise _invalid("to", "required", "needs at least one recipient")
        if len(to_list) + len(cc_list) + len(bcc_list) > limits.max_recipients:
            raise _invalid("to", "max_recipients", f"more than {limits.max_recipients} recipients")
        subject = _single_line(subject, "subject").strip()
        if not subject:
            raise _invalid("subject", "required", "must not be empty")
        if len(subject) > limits.max_subject_length:
            raise _invalid(
                "subject", "max_length", f"is longer than {limits.max_subject_length} characters"
            )
        if text is None and html is None:
            raise _invalid("text", "required", "a message needs a text or an HTML body")
        bodies: tuple[tuple[str, object], ...] = (("text", text), ("html", html))
        for name, body in bodies:  # typed, but stored messages come back from JSON
            if body is not None and (not isinstance(body, str) or "\x00" in body):
                raise _invalid(name, "type", "must be a string without NUL")
        files = list(attachments)
        if len(files) > limits.max_attachments:
            raise _invalid("attachments", "max_items", f"more than {limits.max_attachments}")
        checked_files = tuple(_attachment(a, i, limits) for i, a in enumerate(files))
        total = sum(len(a.content) for a in checked_files)
        total += len((text or "").encode()) + len((html or "").encode())
        if total > limits.max_total_bytes:
            raise _invalid(
                "attachments", "max_total_bytes", f"message over {limits.max_total_bytes} bytes"
            )
        return cls(
            sender=Address.parse(sender, field_name="sender"),
            to=to_list,
            cc=cc_list,
            bcc=bcc_list,
            reply_to=addresses(reply_to, "reply_to"),
            subject=subject,
            text=text,
            html=html,
            attachments=checked_files,
            headers=MappingProxyType(_headers(headers or {}, limits)),
            tags=_tags(tags, limits),
            metadata=MappingProxyType(_metadata(metadata or {}, limits)),
            idempotency_key=_idempotency_key(idempotency_key),
        )

    @property
    def recipients(self) -> tuple[Address, ...]:
        """Everyone the message goes to: to, cc and bcc."""
        return self.to + self.cc + self.bcc

    @property
    def needs_smtputf8(self) -> bool:
        return any(a.needs_smtputf8 for a in (self.sender, *self.recipients, *self.reply_to))

    def to_mime(self, *, message_id: str | None = None) -> MimeMessage:
        """The RFC 5322 message (Bcc left out: it is an envelope matter).

        Structure: ``mixed[alternative[text, related[html, inline images]], files]``,
        each level only when needed. Without SMTPUTF8 every domain is written in its IDNA
        form; display names and the subject are RFC 2047 encoded as needed.
        """
        utf8 = self.needs_smtputf8
        mime = MimeMessage(policy=_SMTPUTF8_POLICY if utf8 else _SMTP_POLICY)
        mime["From"] = self.sender.formatted(ascii_domain=not utf8)
        mime["To"] = ", ".join(a.formatted(ascii_domain=not utf8) for a in self.to)
        if self.cc:
            mime["Cc"] = ", ".join(a.formatted(ascii_domain=not utf8) for a in self.cc)
        if self.reply_to:
            mime["Reply-To"] = ", ".join(a.formatted(ascii_domain=not utf8) for a in self.reply_to)
        mime["Subject"] = self.subject
        domain = self.sender.ascii_email.partition("@")[2]
        mime["Message-ID"] = message_id or make_msgid(domain=domain)
        mime["Date"] = formatdate(usegmt=True)  # RFC 5322 requires it; DKIM signs it
        for name, value in self.headers.items():
            mime[name] = value
        if self.text is not None:
            mime.set_content(self.text)
        if self.html is not None:
            if self.text is None:
                mime.set_content(self.html, subtype="html")
            else:
                mime.add_alternative(self.html, subtype="html")
            parts = cast("list[MimeMessage]", mime.get_payload())
            html_part = mime if self.text is None else parts[-1]
            for image in (a for a in self.attachments if a.inline):
                maintype, _, subtype = image.content_type.partition("/")
                html_part.add_related(
                    image.content, maintype=maintype, subtype=subtype,
                    cid=f"<{image.content_id}>", filename=image.filename, disposition="inline",
                )  # fmt: skip
        for attachment in self.attachments:
            if attachment.inline and self.html is not None:
                continue  # placed beside the HTML above
            maintype, _, subtype = attachment.content_type.partition("/")
            mime.add_attachment(
                attachment.content, maintype=maintype, subtype=subtype,
                filename=attachment.filename,
            )  # fmt: skip
        return mime

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (attachments in base64): what the outbox stores."""
        return {
            "sender": [self.sender.email, self.sender.name],
            "to": [[a.email, a.name] for a in self.to],
            "cc": [[a.email, a.name] for a in self.cc],
            "bcc": [[a.email, a.name] for a in self.bcc],
            "reply_to": [[a.email, a.name] for a in self.reply_to],
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
            "attachments": [
                [a.filename, base64.b64encode(a.content).decode(), a.content_type, a.content_id]
                for a in self.attachments
            ],
            "headers": dict(self.headers),
            "tags": list(self.tags),
            "metadata": dict(self.metadata),
            "idempotency_key": self.idempotency_key,
        }

    def to_stored(self) -> dict[str, Any]:
        """:meth:`to_dict` and its digest (``check``): what the outbox stores.

        :meth:`from_dict` trusts data whose digest matches (this message was validated
        when it was built) and validates anything else in full.
        """
        data = self.to_dict()
        data[_CHECK] = _digest(data)
        return data

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, limits: EmailLimits = DEFAULT_LIMITS
    ) -> EmailMessage:
        """Rebuild a message stored by :meth:`to_stored` (or :meth:`to_dict`).

        With a ``check`` that matches the data, the message is rebuilt as stored: it was
        validated when it was built, under the limits its builder chose. Without one, or
        with one that does not match (the data was changed after it was stored), it is
        validated again in full under ``limits`` and refused if it is not valid.
        """

        def addr(pair: list[str]) -> Address:
            return Address(email=pair[0], name=pair[1])

        if _checked(data):
            return cls(
                sender=addr(data["sender"]),
                to=tuple(addr(p) for p in data["to"]),
                cc=tuple(addr(p) for p in data["cc"]),
                bcc=tuple(addr(p) for p in data["bcc"]),
                reply_to=tuple(addr(p) for p in data["reply_to"]),
                subject=data["subject"],
                text=data["text"],
                html=data["html"],
                attachments=tuple(
                    Attachment(name, base64.b64decode(content), ctype, cid)
                    for name, content, ctype, cid in data["attachments"]
                ),
                headers=MappingProxyType(dict(data["headers"])),
                tags=tuple(data["tags"]),
                metadata=MappingProxyType(dict(data["metadata"])),
                idempotency_key=data["idempotency_key"],
            )
        return cls.build(
            sender=addr(data["sender"]),
            to=[addr(p) for p in data["to"]],
            cc=[addr(p) for p in data["cc"]],
            bcc=[addr(p) for p in data["bcc"]],
            reply_to=[addr(p) for p in data["reply_to"]],
            subject=data["subject"],
            text=data["text"],
            html=data["html"],
            attachments=[
                Attachment(name, base64.b64decode(content), ctype, cid)
                for name, content, ctype, cid in data["attachments"]
            ],
            headers=data["headers"],
            tags=data["tags"],
            metadata=data["metadata"],
            idempotency_key=data["idempotency_key"],
            limits=limits,
        )


_CHECK: Final = "check"


def _digest(data: Mapping[str, Any]) -> str:
    """A digest of the stored form (all but ``check``): any change to the data changes it."""
    content = {k: v for k, v in data.items() if k != _CHECK}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return "b2:" + hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def _checked(data: Mapping[str, Any]) -> bool:
    """Whether ``data`` carries a ``check`` that matches it (data that is not JSON: no)."""
    check = data.get(_CHECK)
    if not isinstance(check, str):
        return False
    try:
        return check == _digest(data)
    except (TypeError, ValueError):
        return False


def _headers(headers: Mapping[Any, Any], limits: EmailLimits) -> dict[str, str]:
    if len(headers) > limits.max_headers:
        raise _invalid("headers", "max_items", f"more than {limits.max_headers} headers")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        where = f"headers.{name}" if isinstance(name, str) and name.isprintable() else "headers"
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise _invalid(where, "header_name", "is not a valid header name")
        if name.lower() in _RESERVED_HEADERS:
            raise _invalid(where, "reserved_header", "is set by the message itself")
        if name.lower() in {n.lower() for n in checked}:
            raise _invalid(where, "duplicate", "is given twice")
        _single_line(value, where)
        if len(value) > limits.max_header_value_length:
            raise _invalid(where, "max_length", f"is longer than {limits.max_header_value_length}")
        checked[name] = value
    return checked


def _tags(tags: Iterable[object], limits: EmailLimits) -> tuple[str, ...]:
    checked = tuple(tags) if not isinstance(tags, str) else (tags,)
    if len(checked) > limits.max_tags:
        raise _invalid("tags", "max_items", f"more than {limits.max_tags} tags")
    for index, tag in enumerate(checked):
        if not isinstance(tag, str) or not _TAG.fullmatch(tag):
            raise _invalid(f"tags[{index}]", "tag", "must be 1-64 of A-Z a-z 0-9 _ . : -")
    return cast("tuple[str, ...]", checked)


def _metadata(metadata: Mapping[Any, Any], limits: EmailLimits) -> dict[str, str]:
    if len(metadata) > limits.max_metadata_entries:
        raise _invalid("metadata", "max_items", f"more than {limits.max_metadata_entries} entries")
    checked: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not _TAG.fullmatch(key):
            raise _invalid("metadata", "key", "keys must be 1-64 of A-Z a-z 0-9 _ . : -")
        _single_line(value, f"metadata.{key}")
        if len(value) > limits.max_metadata_value_length:
            raise _invalid(f"metadata.{key}", "max_length", "is too long")
        checked[key] = value
    return checked


def _idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    _single_line(key, "idempotency_key")
    if not 1 <= len(key) <= 200 or not key.isprintable():
        raise _invalid("idempotency_key", "length", "must be 1-200 printable characters")
    return key
