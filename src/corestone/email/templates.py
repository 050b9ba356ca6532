"""Email templates: Jinja2 in a sandbox, HTML autoescaped, the text part derived when absent.

A template named ``welcome`` is up to three files (or strings) beside each other:

- ``welcome.subject.txt`` — the subject line (required);
- ``welcome.html`` — the HTML body, autoescaped: ``{{ name }}`` with ``<script>`` in it
  comes out as ``&lt;script&gt;``;
- ``welcome.txt`` — the text body; without it the text is derived from the rendered HTML
  (:func:`html_to_text`), so every message has a readable plain part.

Templates are code written by the service's developers; merge data is the users' input.
Jinja renders a value as text and never evaluates it again, so ``{{ 7*7 }}`` or
``{% include %}`` inside a user's name stays those characters. The environment is
Jinja's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` anyway: a template may not
reach private attributes, mutate the data, or call anything unsafe, which limits what a
mistaken (or copied-in) template can do. A variable the data lacks is an error naming it
(``StrictUndefined``), not an empty string in a sent email.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Final

from corestone._extras import requires_extra
from corestone.email.message import Address, EmailMessage
from corestone.errors import InvalidInputError, NotFoundError

with requires_extra(__name__, "email"):
    import jinja2
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["EmailTemplates", "RenderedEmail", "html_to_text"]

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-/]{0,127}")


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """A template rendered with one recipient's data."""

    subject: str
    html: str | None
    text: str


class EmailTemplates:
    """Load templates from a folder, from strings, or both (strings win), and render them."""

    def __init__(
        self, folder: str | Path | None = None, *, strings: Mapping[str, str] | None = None
    ) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if strings:
            loaders.append(jinja2.DictLoader(dict(strings)))
        if folder is not None:
            loaders.append(jinja2.FileSystemLoader(str(folder)))
        if not loaders:
            raise ValueError("EmailTemplates needs a folder or strings")
        self._env = ImmutableSandboxedEnvironment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html", "htm"), default_for_string=False, default=False
            ),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            auto_reload=False,
        )

    def render(self, name: str, data: Mapping[str, Any]) -> RenderedEmail:
        """Render ``name``'s subject, HTML and text with ``data``.

        Raises NotFoundError when the template (its subject) does not exist, and
        InvalidInputError naming the template part and the variable when data is missing.
        """
        if not _NAME.fullmatch(name) or ".." in name:
            raise InvalidInputError("template: not a template name", field="template", rule="name")
        subject = self._part(f"{name}.subject.txt", data, required=True)
        html = self._part(f"{name}.html", data, required=False)
        text = self._part(f"{name}.txt", data, required=False)
        if html is None and text is None:
            raise NotFoundError(f"template {name!r} has no {name}.html nor {name}.txt")
        assert subject is not None
        subject = subject.strip()
        if "\r" in subject or "\n" in subject:  # merge data must not add a header line
            raise InvalidInputError(
                f"{name}.subject.txt: the rendered subject has a line break",
                field="subject",
                rule="no_line_breaks",
            )
        return RenderedEmail(
            subject=subject, html=html, text=text if text is not None else html_to_text(html or "")
        )

    def message(
        self,
        name: str,
        data: Mapping[str, Any],
        *,
        sender: str | Address | tuple[str, str],
        to: Iterable[str | Address | tuple[str, str]] | str,
        **options: Any,
    ) -> EmailMessage:
        """Render ``name`` with ``data`` and build the (validated) message in one step."""
        rendered = self.render(name, data)
        return EmailMessage.build(
            sender=sender, to=to, subject=rendered.subject, html=rendered.html,
            text=rendered.text, **options,
        )  # fmt: skip

    def _part(self, filename: str, data: Mapping[str, Any], *, required: bool) -> str | None:
        try:
            template = self._env.get_template(filename)
        except jinja2.TemplateNotFound:
            if required:
                raise NotFoundError(f"template part {filename!r} does not exist") from None
            return None
        try:
            return template.render(dict(data))
        except jinja2.UndefinedError as exc:
            raise InvalidInputError(
                f"{filename}: {exc.message}", field=f"data ({filename})", rule="undefined"
            ) from None
        except SecurityError as exc:
            raise InvalidInputError(
                f"{filename}: refused by the sandbox: {exc}", field=filename, rule="sandbox"
            ) from None


_PARAGRAPH: Final = frozenset(
    {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "section",
     "article", "header", "footer", "blockquote", "hr", "pre"}
)  # fmt: skip
_LINE: Final = frozenset({"br", "tr", "li"})
_SKIP: Final = frozenset({"script", "style", "head", "title"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0
        self._links: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skipping += 1
        elif tag in _PARAGRAPH:
            self.parts.append("\n\n")
        elif tag in _LINE:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")
        if tag == "a":
            self._links.append(dict(attrs).get("href"))
        if tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.parts.append(alt)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _PARAGRAPH:
            self.parts.append("\n\n")
        if tag == "a" and self._links:
            href = self._links.pop()
            if href and href.startswith(("http://", "https://", "mailto:")):
                self.parts.append(f" ({href.removeprefix('mailto:')})")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """A readable plain-text version of an HTML body: blocks on lines, links with their URL."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    lines = [" ".join(line.split()) for line in "".join(extractor.parts).splitlines()]
    text = "\n".join(lines).strip()
    return re.sub(r"\n{3,}", "\n\n", text)
