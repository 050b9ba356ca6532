"""The Mailgun provider: corestone's id is the only ``v:corestone-id`` Mailgun gets."""

from __future__ import annotations

from corestone.email.providers.mailgun import MailgunProvider
from tests.integration.email_providers.conftest import MAILGUN_DOMAIN, MAILGUN_KEY, outgoing
from tests.integration.email_providers.fakes import MailgunFake


async def test_metadata_named_like_the_id_variable_cannot_name_another_message(
    mailgun_fake: MailgunFake,
) -> None:
    """Metadata ``corestone-id`` (another message's id) never reaches Mailgun beside ours."""
    provider = MailgunProvider(MAILGUN_KEY, MAILGUN_DOMAIN, base_url=mailgun_fake.url)
    await provider.send(outgoing("m-1", metadata={"corestone-id": "m-2", "team": "7"}))
    await provider.aclose()

    [request] = mailgun_fake.requests
    fields, _ = request.form()
    assert [(k, v) for k, v in fields if k.startswith("v:")] == [
        ("v:team", "7"),
        ("v:corestone-id", "m-1"),
    ]
