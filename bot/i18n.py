"""Languages: the gettext catalogs in bot/locales, which one an update gets, and rendering a
translated template whose placeholders carry entities (a user's name stays a bold entity, never
markup, whatever the word order of the language).

Handlers translate with aiogram's `gettext` (imported as `_`); LocaleMiddleware has chosen the
update's locale by then. Strings that are defined at import time are marked with `N_` (so
`pybabel extract` finds them) and translated where they are used. docs/development.md says how
to add a string or a language.
"""

from __future__ import annotations

import functools
from pathlib import Path
from string import Formatter

from aiogram.utils.formatting import Text
from aiogram.utils.i18n import I18n

from bot.errors import HelloBotError

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
DOMAIN = "messages"
DEFAULT_LOCALE = "en"


def N_(message: str) -> str:
    """Marks a string for extraction without translating it (it is translated where used)."""
    return message


# Translators: the name of your language, written in your language; the /language keyboard
# shows it on this language's button.
LANGUAGE_NAME = N_("English")


class CatalogsNotCompiledError(HelloBotError):
    """The .po sources are there but their .mo files are not (a clone nobody bootstrapped)."""


def load_i18n(path: Path = LOCALES_DIR) -> I18n:
    """Every compiled catalog under `path`; each language is one `<code>/LC_MESSAGES` folder."""
    try:
        i18n = I18n(path=path, default_locale=DEFAULT_LOCALE, domain=DOMAIN)
    except RuntimeError as exc:  # aiogram's "Found locale ... but this language is not compiled"
        msg = f"{exc} Run scripts/test or scripts/run once: they compile bot/locales."
        raise CatalogsNotCompiledError(msg) from exc
    if DEFAULT_LOCALE not in i18n.available_locales:
        msg = f"no compiled {DEFAULT_LOCALE!r} catalog in {path}"
        raise CatalogsNotCompiledError(msg)
    return i18n


def primary_subtag(language_code: str | None) -> str | None:
    """`pt-br` -> `pt`: Telegram sends IETF tags; our catalogs are per language."""
    if not language_code:
        return None
    return language_code.replace("_", "-").split("-", 1)[0].lower() or None


def choose_locale(i18n: I18n, *, chosen: str | None, language_code: str | None) -> str:
    """The user's own choice if we still ship it, else Telegram's language, else English."""
    for candidate in (chosen, primary_subtag(language_code)):
        if candidate is not None and candidate in i18n.locales:
            return candidate
    return i18n.default_locale


def language_names(i18n: I18n) -> dict[str, str]:
    """Locale code -> the language's own name, in code order (the /language keyboard)."""
    return {
        code: i18n.gettext(LANGUAGE_NAME, locale=code) for code in sorted(i18n.available_locales)
    }


def render(template: str, **fields: str | Text) -> Text:
    """A translated `str.format`-style template as a Text: literal parts stay plain text and each
    `{field}` becomes the node given for it (e.g. `Bold(name)`), so it is sent as an entity."""
    nodes: list[str | Text] = []
    for literal, field in _parse(template):
        if literal:
            nodes.append(literal)
        if field is not None:
            nodes.append(fields[field])
    return Text(*nodes)


@functools.lru_cache(maxsize=256)
def _parse(template: str) -> tuple[tuple[str, str | None], ...]:
    # A few templates per language, parsed once each: this runs for every greeting.
    parsed = []
    for literal, field, spec, conversion in Formatter().parse(template):
        if spec or conversion:
            msg = f"placeholders take no format spec or conversion: {template!r}"
            raise ValueError(msg)
        parsed.append((literal, field))
    return tuple(parsed)


def placeholders(template: str) -> set[str]:
    """The `{field}` names of a template (the catalog test holds translations to them)."""
    return {field for _, field in _parse(template) if field is not None}
