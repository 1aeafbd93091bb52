"""bot.i18n: which locale wins, templates rendered into entities, loading the catalogs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from aiogram.utils.formatting import Bold

from bot.i18n import (
    CatalogsNotCompiledError,
    choose_locale,
    language_names,
    load_i18n,
    placeholders,
    primary_subtag,
    render,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("code", "expected"),
    [("pt-br", "pt"), ("zh-hans", "zh"), ("en", "en"), ("DE_at", "de"), ("", None), (None, None)],
)
def test_primary_subtag(code: str | None, expected: str | None) -> None:
    assert primary_subtag(code) == expected


@pytest.mark.parametrize(
    ("chosen", "language_code", "expected"),
    [
        ("uk", "de", "uk"),  # the user's own choice wins
        (None, "de-ch", "de"),  # else Telegram's language
        ("pt", "ru", "ru"),  # a choice we no longer ship is skipped
        (None, "pt-br", "en"),  # a language we do not ship: English
        (None, None, "en"),
    ],
)
def test_choose_locale(chosen: str | None, language_code: str | None, expected: str) -> None:
    assert choose_locale(load_i18n(), chosen=chosen, language_code=language_code) == expected


def test_render_puts_each_node_where_the_template_says() -> None:
    name = "<i>Zoë</i> 🎉"
    text, entities = render("¡Hola de nuevo, {name}! {{ok}}", name=Bold(name)).render()
    assert text == f"¡Hola de nuevo, {name}! {{ok}}"
    [bold] = entities
    assert (bold.type, bold.offset, bold.length) == ("bold", 16, len(name) + 1)  # 🎉: 2 units


def test_render_with_the_placeholder_first_and_plain_fields() -> None:
    text, entities = render("{name}, willkommen", name="Ann").render()
    assert (text, entities) == ("Ann, willkommen", [])


def test_placeholders_refuse_format_specs() -> None:
    assert placeholders("Hi {name}, {name}!") == {"name"}
    with pytest.raises(ValueError, match="format spec"):
        placeholders("{name!r}")
    with pytest.raises(ValueError, match="format spec"):
        placeholders("{count:>3}")


def test_every_language_has_a_name_on_the_keyboard() -> None:
    assert language_names(load_i18n()) == {
        "de": "Deutsch",
        "en": "English",
        "es": "Español",
        "ru": "Русский",
        "uk": "Українська",
    }


def test_uncompiled_catalogs_stop_the_start_with_a_clear_error(tmp_path: Path) -> None:
    messages = tmp_path / "de" / "LC_MESSAGES"
    messages.mkdir(parents=True)
    (messages / "messages.po").write_text('msgid ""\nmsgstr ""\n')
    with pytest.raises(CatalogsNotCompiledError, match="not compiled"):
        load_i18n(tmp_path)


def test_no_english_catalog_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogsNotCompiledError, match="no compiled 'en' catalog"):
        load_i18n(tmp_path)


def test_the_bot_translates_without_babel_installed() -> None:
    """The image has no Babel (only its `catalogs` stage does): gettext reads the .mo files."""
    script = (
        "import sys; sys.modules['babel'] = None\n"  # makes `import babel` fail, as in the image
        "from aiogram.utils.i18n import gettext\n"
        "from bot.i18n import load_i18n\n"
        "import bot.app\n"
        "i18n = load_i18n()\n"
        "with i18n.context(), i18n.use_locale('de'):\n"
        "    print(gettext('Welcome back, {name}!'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Schön, dass du wieder da bist, {name}!\n"
