"""SMTP on aiosmtplib: pooled connections, STARTTLS or implicit TLS, AUTH, SMTPUTF8, DKIM.

Opening an SMTP connection costs a TCP (and often a TLS) handshake, EHLO and AUTH: more
than sending a small message. So the provider keeps up to ``pool_size`` connections open
and hands them from send to send; a batch goes over one connection. A pooled connection
the server closed while idle fails at its first command (``MAIL FROM``, before anything
was sent), so that one failure is retried once on a fresh connection.

Recipients are all or nothing. Each ``RCPT TO`` is sent first; if the server refuses any
of them the transaction is reset (``RSET``) before ``DATA`` and nothing is delivered. A
partial delivery could neither be retried (the accepted recipients would get a second
copy) nor reported as sent (the refused ones would be silently lost). A refusal with a
4xx code is retryable; if any refusal is 5xx, retrying cannot help and the error is
permanent, naming the refused recipients.

Errors: 4xx replies, connection errors and timeouts are retryable; 5xx replies and a
message that needs SMTPUTF8 on a server without it are permanent. A connection lost
after the message's data went out but before the server's reply is reported retryable:
SMTP cannot tell whether the server kept it (the ``Message-ID`` stays the same across
attempts, so a receiver can spot the copy).

Configuration is a URL, read as ``corestone doctor`` reads ``CORESTONE_SMTP_URL``:
``smtp://user:pass@host:587?starttls=true`` (plain, then STARTTLS), ``smtps://…:465``
(TLS from the first byte), ``smtp://host:25`` (no TLS, no AUTH).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

from corestone._extras import requires_extra
from corestone.email.providers._common import shorten, wire_mime
from corestone.email.providers.base import Outgoing, Sent
from corestone.errors import EmailProviderError
from corestone.observability.health import CheckResult, HealthStatus

with requires_extra(__name__, "smtp"):
    import aiosmtplib
    import dkim

__all__ = ["DkimKey", "SmtpProvider"]

_DKIM_HEADERS: Final = (
    b"from", b"to", b"cc", b"reply-to", b"subject", b"date", b"message-id",
    b"mime-version", b"content-type", b"x-corestone-id",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class DkimKey:
    """Sign outgoing mail: ``d=domain``, ``s=selector``, the RSA private key in PEM."""

    selector: str
    domain: str
    private_key: bytes

    def __repr__(self) -> str:  # the key must never reach a log
        return f"DkimKey(selector={self.selector!r}, domain={self.domain!r}, private_key=***)"


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


class SmtpProvider:
    """Sends through one SMTP server; see the module docstring for the rules it keeps."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "smtp",
        pool_size: int = 2,
        max_batch: int = 100,
        timeout: float = 30.0,
        dkim_key: DkimKey | None = None,
        local_hostname: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("the SMTP URL must start with smtp:// or smtps://")
        if pool_size < 1 or max_batch < 1:
            raise ValueError("pool_size and max_batch must be at least 1")
        self.name = name
        self.max_batch = max_batch
        self._implicit_tls = parts.scheme == "smtps"
        self._starttls = _flag(parse_qs(parts.query).get("starttls", [""])[-1])
        self._hostname = parts.hostname or "localhost"
        self._port = parts.port or (465 if self._implicit_tls else 587 if self._starttls else 25)
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password or "") if parts.username else None
        self._timeout = timeout
        self._dkim = dkim_key
        self._local_hostname = local_hostname
        self._tls_context = tls_context
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(pool_size)
        self._closed = False
        self.connections_opened = 0
        """How many SMTP connections this provider has opened: reuse keeps it low."""

    def __repr__(self) -> str:
        return f"SmtpProvider(name={self.name!r}, host={self._hostname!r}, port={self._port})"

    # -- connections ---------------------------------------------------------------------

    async def _open(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self._hostname,
            port=self._port,
            username=self._username,
            password=self._password,
            use_tls=self._implicit_tls,
            start_tls=self._starttls,
            timeout=self._timeout,
            local_hostname=self._local_hostname,
            tls_context=self._tls_context,
        )
        self.connections_opened += 1
        try:
            await client.connect()
        except BaseException:
            client.close()
            raise
        return client

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
            client.close()
        return None

    def _give_back(self, client: aiosmtplib.SMTP) -> None:
        if self._closed or not client.is_connected:
            client.close()
        else:
            self._idle.append(client)

    # -- sending -------------------------------------------------------------------------

    async def send(self, outgoing: Outgoing) -> Sent:
        """One message over a pooled connection."""
        outcome = (await self._send_all([outgoing]))[0]
        if isinstance(outcome, EmailProviderError):
            raise outcome
        return outcome

    async def send_batch(self, batch: Sequence[Outgoing]) -> list[Sent | EmailProviderError]:
        """Every message of the batch over one connection, one transaction each.

        A refusal of one message (its sender, recipients or data) is its own outcome. A
        connection lost between messages is replaced by a fresh one; if a fresh one
        fails too, every message not yet sent carries that (retryable) error.
        """
        if len(batch) > self.max_batch:
            raise ValueError(f"a batch holds at most {self.max_batch} messages")
        return await self._send_all(list(batch))

    async def _send_all(self, batch: list[Outgoing]) -> list[Sent | EmailProviderError]:
        if self._closed:
            raise EmailProviderError(self.name, "provider is closed", retryable=True)
        outcomes: list[Sent | EmailProviderError] = []
        async with self._slots:
            client = self._take_idle()
            untried = False  # is ``client`` a fresh connection no transaction has used yet?
            completed = False
            try:
                for outgoing in batch:
                    try:
                        envelope = self._prepare(outgoing)
                    except EmailProviderError as exc:
                        outcomes.append(exc)
                        continue
                    while True:
                        if client is None:
                            client, untried = await self._open(), True
                        try:
                            outcomes.append(await self._transaction(client, envelope))
                            untried = False
                            break
                        except _StaleConnectionError:
                            client.close()
                            client = None
                            if untried:  # even a fresh connection dropped before MAIL
                                raise
                        except _MessageFailedError as failed:
                            outcomes.append(failed.error)
                            untried = False
                            if not failed.keep_connection:
                                client.close()
                                client = None
                            break
                completed = True
            except Exception as exc:  # noqa: BLE001 - mapped: the rest share the error
                error = self._map(exc.__cause__ or exc, "connecting")
                outcomes.extend([error] * (len(batch) - len(outcomes)))
                completed = True
            finally:
                if client is not None:
                    if completed:
                        self._give_back(client)
                    else:  # cancelled mid-transaction: its state is unknown
                        client.close()
        return outcomes

    def _prepare(self, outgoing: Outgoing) -> _Envelope:
        message = outgoing.message
        utf8 = message.needs_smtputf8
        mime = wire_mime(self.name, outgoing)
        data = mime.as_bytes()
        data = self._sign(data)
        return _Envelope(
            data=data,
            sender=message.sender.email if utf8 else message.sender.ascii_email,
            recipients=[a.email if utf8 else a.ascii_email for a in message.recipients],
            utf8=utf8,
            message_id=str(mime["Message-ID"]),
        )

    def _sign(self, data: bytes) -> bytes:
        key = self._dkim
        if key is None:
            return data
        head = data.split(b"\r\n\r\n", 1)[0].lower()
        try:
            header: bytes = dkim.sign(
                data,
                key.selector.encode(),
                key.domain.encode(),
                key.private_key,
                include_headers=[h for h in _DKIM_HEADERS if b"\n" + h + b":" in b"\n" + head],
            )
        except Exception as exc:  # noqa: BLE001 - a bad key or message: no retry can help
            raise EmailProviderError(
                self.name, shorten(f"DKIM signing failed: {exc}"), retryable=False
            ) from None
        return header + data

    async def _transaction(self, client: aiosmtplib.SMTP, envelope: _Envelope) -> Sent:
        encoding = "utf-8" if envelope.utf8 else "ascii"
        options: list[str] = []
        try:
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
            if envelope.utf8:
                if not client.supports_extension("smtputf8"):
                    raise _MessageFailedError(
                        EmailProviderError(
                            self.name,
                            "message needs SMTPUTF8 and the server does not offer it",
                            retryable=False,
                        ),
                        keep_connection=True,
                    )
                options.append("SMTPUTF8")
            if not envelope.data.isascii() and client.supports_extension("8bitmime"):
                options.append("BODY=8BITMIME")
            await client.mail(envelope.sender, options=options, encoding=encoding)
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            raise _StaleConnectionError from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _MessageFailedError(self._map(exc, "MAIL FROM"), keep_connection=True) from None
        except _MessageFailedError:
            raise
        except Exception as exc:  # noqa: BLE001 - a timeout: the connection's state is unknown
            raise _MessageFailedError(self._map(exc, "MAIL FROM"), keep_connection=False) from None
        try:
            refused: list[tuple[str, int, str]] = []
            for recipient in envelope.recipients:
                try:
                    await client.rcpt(recipient, encoding=encoding)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    refused.append((recipient, exc.code, exc.message))
            if refused:
                await client.rset()
                permanent = any(code >= 500 for _, code, _ in refused)
                shown = "; ".join(f"{r}: {code} {text}" for r, code, text in refused[:5])
                error = EmailProviderError(
                    self.name, shorten(f"SMTP recipients refused: {shown}"), retryable=not permanent
                )
                raise _MessageFailedError(error, keep_connection=True)
            await client.data(envelope.data)
        except _MessageFailedError:
            raise
        except aiosmtplib.SMTPResponseException as exc:
            keep = exc.code > 0 and client.is_connected
            raise _MessageFailedError(self._map(exc, "DATA"), keep_connection=keep) from None
        except Exception as exc:  # noqa: BLE001 - lost or timed out mid-transaction
            raise _MessageFailedError(self._map(exc, "DATA"), keep_connection=False) from None
        return Sent(self.name, envelope.message_id)

    def _map(self, exc: BaseException, stage: str) -> EmailProviderError:
        if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code > 0:
            return EmailProviderError(
                self.name,
                shorten(f"SMTP {exc.code} at {stage}: {exc.message}"),
                retryable=400 <= exc.code < 500,
            )
        if isinstance(exc, aiosmtplib.SMTPNotSupported) or type(exc) is aiosmtplib.SMTPException:
            return EmailProviderError(
                self.name, shorten(f"{stage}: {exc}"), retryable=False
            )  # STARTTLS or AUTH asked for and not offered: configuration, not a hiccup
        if isinstance(exc, ssl.SSLCertVerificationError):
            return EmailProviderError(
                self.name, shorten(f"TLS certificate refused: {exc}"), retryable=False
            )
        return EmailProviderError(
            self.name, shorten(f"{stage}: {type(exc).__name__}: {exc}"), retryable=True
        )

    # -- health and shutdown -------------------------------------------------------------

    async def check(self) -> CheckResult:
        """Connect, EHLO, STARTTLS and AUTH as configured, then NOOP: the cheapest proof."""
        try:
            client = await self._open()
        except Exception as exc:  # noqa: BLE001 - any failure is the check's answer
            error = self._map(exc, "connecting")
            return CheckResult(status=HealthStatus.FAIL, output=error.reason)
        try:
            await client.noop()
            await client.quit()
        except Exception as exc:  # noqa: BLE001 - any failure is the check's answer
            return CheckResult(status=HealthStatus.FAIL, output=self._map(exc, "NOOP").reason)
        finally:
            client.close()
        return CheckResult(output=f"{self._hostname}:{self._port}")

    async def aclose(self) -> None:
        """Say QUIT on every idle connection and refuse further sends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except Exception:  # noqa: BLE001, S110 - closing anyway
                pass
            finally:
                client.close()


@dataclass(frozen=True, slots=True)
class _Envelope:
    data: bytes
    sender: str
    recipients: list[str]
    utf8: bool
    message_id: str


class _StaleConnectionError(Exception):
    """A pooled connection was gone before MAIL FROM: nothing was sent, try a fresh one."""


class _MessageFailedError(Exception):
    """One message failed; whether its connection can carry the next one."""

    def __init__(self, error: EmailProviderError, *, keep_connection: bool) -> None:
        super().__init__(error.reason)
        self.error = error
        self.keep_connection = keep_connection
