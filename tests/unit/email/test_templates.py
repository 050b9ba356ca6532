"""Email templates: sandboxed Jinja2, HTML escaped, user data never runs as template code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corestone.cli import app
from corestone.email.templates import EmailTemplates, html_to_text
from corestone.errors import InvalidInputError, NotFoundError

STRINGS = {
    "welcome.subject.txt": "Welcome to {{ workspace }}, {{ name }}\n",
    "welcome.html": '<h1>Hi {{ name }}</h1><p>Open <a href="{{ url }}">your board</a>.</p>',
}


def test_html_is_escaped_and_text_is_derived_from_it() -> None:
    """The HTML escapes merge data; the text part reads like the HTML, links with URLs."""
    rendered = EmailTemplates(strings=STRINGS).render(
        "welcome", {"name": "<script>x</script>", "workspace": "Acme", "url": "https://t.example/b?a=1&b=2"}
    )  # fmt: skip

    assert rendered.subject == "Welcome to Acme, <script>x</script>"  # a subject is text
    assert "&lt;script&gt;" in (rendered.html or "")
    assert "<script>" not in (rendered.html or "")
    assert (
        rendered.text == "Hi <script>x</script>\n\nOpen your board (https://t.example/b?a=1&b=2)."
    )


@pytest.mark.parametrize(
    "payload",
    ["{{ 7*7 }}", "{% for x in range(10**9) %}x{% endfor %}", "{{ ''.__class__.__mro__ }}",
     "{% include 'welcome.html' %}", "{{ config }}"],
)  # fmt: skip
def test_template_code_in_merge_data_is_rendered_as_text(payload: str) -> None:
    """A user's name that looks like Jinja stays those characters, never evaluated."""
    rendered = EmailTemplates(strings=STRINGS).render(
        "welcome", {"name": payload, "workspace": "W", "url": "https://x.example"}
    )
    assert payload in rendered.subject
    assert "49" not in rendered.subject


@pytest.mark.parametrize(
    "template",
    ["{{ name.__class__ }}", "{{ data.clear() }}", "{{ '{0.__class__}'.format(name) }}",
     "{{ lipsum.__globals__ }}", "{{ cycler.__init__.__globals__ }}"],
)  # fmt: skip
def test_the_sandbox_refuses_unsafe_template_code(template: str) -> None:
    """Even a template (developer code) cannot reach internals or mutate the data."""
    data = {"name": "x", "data": {"k": 1}}
    templates = EmailTemplates(strings={"t.subject.txt": template, "t.txt": "body"})

    with pytest.raises(InvalidInputError) as caught:
        templates.render("t", data)
    assert caught.value.rule in {"sandbox", "undefined"}
    assert data["data"] == {"k": 1}


def test_missing_data_names_the_variable_and_the_part() -> None:
    """StrictUndefined: no silently empty greeting goes out."""
    with pytest.raises(InvalidInputError) as caught:
        EmailTemplates(strings=STRINGS).render("welcome", {"name": "x", "url": "u"})
    assert "workspace" in caught.value.message
    assert caught.value.rule == "undefined"


def test_a_line_break_in_the_rendered_subject_is_refused() -> None:
    """Merge data cannot add a header through the subject."""
    with pytest.raises(InvalidInputError) as caught:
        EmailTemplates(strings=STRINGS).render(
            "welcome", {"name": "x\r\nBcc: v@example.com", "workspace": "W", "url": "u"}
        )
    assert (caught.value.field, caught.value.rule) == ("subject", "no_line_breaks")


def test_unknown_templates_and_names_outside_the_folder(tmp_path: Path) -> None:
    """A missing template is NotFoundError; a path-like name is refused before loading."""
    (tmp_path / "secret.subject.txt").write_text("s")
    folder = tmp_path / "templates"
    folder.mkdir()
    templates = EmailTemplates(folder)

    with pytest.raises(NotFoundError):
        templates.render("nope", {})
    with pytest.raises(InvalidInputError):
        templates.render("../secret", {})


def test_folder_templates_with_their_own_text_part(tmp_path: Path) -> None:
    """A .txt beside the .html is used as is; strings override files of the same name."""
    (tmp_path / "n.subject.txt").write_text("Task {{ title }}")
    (tmp_path / "n.html").write_text("<p>{{ title }}</p>")
    (tmp_path / "n.txt").write_text("Task: {{ title }}")
    rendered = EmailTemplates(tmp_path, strings={"n.subject.txt": "Override {{ title }}"}).render(
        "n", {"title": "Fix"}
    )
    assert (rendered.subject, rendered.text, rendered.html) == (
        "Override Fix",
        "Task: Fix",
        "<p>Fix</p>",
    )


def test_html_to_text_skips_styles_scripts_and_keeps_structure() -> None:
    """Lists become dashes, breaks become lines, scripts and styles vanish."""
    html = (
        "<style>p{color:red}</style><p>A<br>B</p><ul><li>one</li><li>two</li></ul>"
        "<script>x()</script>"
    )
    assert html_to_text(html) == "A\nB\n\n- one\n- two"


def test_cli_preview_prints_and_saves(tmp_path: Path) -> None:
    """`corestone email preview` renders with a JSON file; bad data exits 2 with one line."""
    for name, text in STRINGS.items():
        (tmp_path / name).write_text(text)
    data = tmp_path / "d.json"
    data.write_text(json.dumps({"name": "Ann", "workspace": "Acme", "url": "https://x.example"}))
    runner = CliRunner()

    shown = runner.invoke(app, ["email", "preview", "welcome", "--data", str(data),
                                "--templates", str(tmp_path)])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "Subject: Welcome to Acme, Ann" in shown.output
    out = str(tmp_path / "m.eml")
    saved = runner.invoke(app, ["email", "preview", "welcome", "--data", str(data),
                                "--templates", str(tmp_path), "--out", out])  # fmt: skip
    assert saved.exit_code == 0, saved.output
    assert b"Subject: Welcome to Acme, Ann" in (tmp_path / "m.eml").read_bytes()
    data.write_text("[1]")
    bad = runner.invoke(app, ["email", "preview", "welcome", "--data", str(data),
                              "--templates", str(tmp_path)])  # fmt: skip
    assert bad.exit_code == 2
