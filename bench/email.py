"""Email (issue 13): SMTP bulk vs a connection per message vs fastapi-mail; the outbox.

``python -m bench email [--quick]``. In one run:

- 10,000 messages (``--quick``: 1,000) to a local aiosmtpd server in its own process,
  sent three ways: corestone's SMTP provider in batches over its pooled connections,
  ``aiosmtplib.send`` (one connection per message), and fastapi-mail (one
  ``send_message`` per message as its docs show, and its own lists of 100 over one
  connection). Messages per second, the SMTP connections the server accepted, and the
  CPU time per message of the client and of the server.
  Then the same over STARTTLS, as every real submission server requires (1,000
  messages, ``--quick`` 200; reported, not checked).
- The outbox on PostgreSQL (its own database): the time of a transaction that calls
  ``EmailService.send`` against the same transaction doing one plain one-row insert, and
  messages delivered per second by one ``EmailSender`` to the memory provider (with its
  default claim of 100, checked; and with claims of 500, reported).

The checks are issue 13's targets. Contenders run one after another, so the machine's
load (printed) moves them all; the ratios are what to compare.
"""

from __future__ import annotations

import os

from bench._email_outbox import accept, deliver, outbox_database, queue
from bench._email_smtp import (
    CONCURRENCY,
    SmtpResult,
    corestone_bulk,
    fastapi_mail_lists,
    fastapi_mail_single,
    mails,
    one_connection_per_message,
    smtp_server,
)
from bench._report import Report

__all__ = ["run"]

_CONTENDERS = (
    ("corestone_bulk", "corestone SMTP provider, batches of 100, pooled", corestone_bulk),
    ("per_message", "aiosmtplib.send, one connection per message", one_connection_per_message),
    ("fastapi_mail", "fastapi-mail, one send_message per message", fastapi_mail_single),
    ("fastapi_mail_lists", "fastapi-mail, send_message of lists of 100", fastapi_mail_lists),
)


async def _smtp(report: Report, count: int, *, tls: bool = False) -> dict[str, SmtpResult]:
    data = mails(count)
    results: dict[str, SmtpResult] = {}
    prefix, suffix = ("smtp_tls_", " (STARTTLS)") if tls else ("smtp_", "")
    with smtp_server(tls=tls) as server:
        for key, label, send in _CONTENDERS:
            result = await server.measure(lambda send=send: send(server, data))  # type: ignore[misc]
            results[key] = result
            client_us = result.cpu_us(result.client_cpu)
            server_us = result.cpu_us(result.server_cpu)
            report.rows.append(
                (label + suffix, result.messages, result.per_second, result.connections,
                 result.errors, client_us or "", server_us or "")
            )  # fmt: skip
            report.results[f"{prefix}{key}_msgs_per_s"] = result.per_second
            report.results[f"{prefix}{key}_connections"] = float(result.connections)
            if client_us is not None:
                report.results[f"{prefix}{key}_client_cpu_us_per_msg"] = client_us
            if server_us is not None:
                report.results[f"{prefix}{key}_server_cpu_us_per_msg"] = server_us
            if result.messages != count or result.errors:
                report.notes.append(
                    f"{key}: the server received {result.messages} of {count} messages "
                    f"({result.errors} errors)"
                )
    return results


async def run(quick: bool) -> Report:
    count = 1_000 if quick else 10_000
    tls_count = 200 if quick else 1_000
    accepts = 300 if quick else 2_000
    report = Report(
        "email",
        ("contender", "messages", "msgs/s", "connections", "errors", "client µs/msg",
         "server µs/msg"),
    )  # fmt: skip
    load = os.getloadavg()
    report.notes.append(f"load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    report.notes.append(f"SMTP: {count} messages per contender, {CONCURRENCY} calls in flight each")

    smtp = await _smtp(report, count)
    # What a real submission server costs: STARTTLS on every connection (fewer messages:
    # a TLS handshake per message is slow). Reported, not checked: the run is plain.
    tls = await _smtp(report, tls_count, tls=True)
    report.results["smtp_tls_bulk_vs_connection_per_message"] = (
        tls["corestone_bulk"].per_second / tls["per_message"].per_second
    )
    report.notes.append(f"STARTTLS rows: {tls_count} messages per contender, not checked")

    async with outbox_database() as db:
        accepted = await accept(db, accepts)
        delivered = await deliver(db)
        await queue(db, delivered.delivered, start=10 * delivered.delivered)
        wide = await deliver(db, batch=500)
    report.rows += [
        ("outbox: tx with one plain insert (median µs)", "", accepted.insert_us, "", "", "", ""),
        ("outbox: tx with EmailService.send (median µs)", "", accepted.send_us, "", "", "", ""),
        ("outbox: tx with insert + send (median µs)", "", accepted.insert_and_send_us, "", "",
         "", ""),
        ("outbox: accepted through send", accepted.transactions, accepted.accepted_per_second,
         "", "", "", ""),
        ("outbox: delivered by one sender (memory)", delivered.delivered, delivered.per_second,
         "", delivered.left + delivered.duplicates, "", ""),
        ("outbox: delivered, claims of 500", wide.delivered, wide.per_second,
         "", wide.left + wide.duplicates, "", ""),
    ]  # fmt: skip
    report.results.update(
        {
            "outbox_insert_tx_us": accepted.insert_us,
            "outbox_send_tx_us": accepted.send_us,
            "outbox_insert_and_send_tx_us": accepted.insert_and_send_us,
            "outbox_accepted_per_s": accepted.accepted_per_second,
            "outbox_send_vs_insert_ratio": accepted.send_ratio,
            "outbox_send_added_ratio": accepted.added_ratio,
            "outbox_delivered_per_s": delivered.per_second,
            "outbox_delivered": float(delivered.delivered),
            "outbox_not_sent": float(delivered.left),
            "outbox_duplicates": float(delivered.duplicates),
            "outbox_delivered_batch500_per_s": wide.per_second,
        }
    )
    report.notes.append(
        f"outbox: {accepted.transactions} timed transactions of each shape; delivery in "
        f"{delivered.passes} passes, {delivered.left} rows left unsent, "
        f"{delivered.duplicates} duplicates"
    )

    bulk = smtp["corestone_bulk"].per_second
    per_message = smtp["per_message"].per_second
    peer = max(smtp["fastapi_mail"].per_second, smtp["fastapi_mail_lists"].per_second)
    report.check(
        "smtp_bulk_vs_connection_per_message", bulk / per_message if per_message else None, ">=", 5
    )
    report.check(
        "smtp_bulk_vs_best_fastapi_mail",
        bulk / peer if peer else None,
        ">",
        1,
        "the better of fastapi-mail's two ways",
    )
    report.check("outbox_send_tx_vs_insert_tx", accepted.send_ratio, "<=", 1.3)
    report.check("outbox_delivered_per_s", delivered.per_second, ">=", 2000)
    report.check(
        "outbox_every_message_sent_once",
        float(delivered.left + delivered.duplicates + wide.left + wide.duplicates),
        "==",
        0,
        "rows left unsent + duplicates",
    )
    return report
