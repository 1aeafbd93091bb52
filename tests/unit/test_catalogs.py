"""The translation catalogs against the source: every string the bot sends is translated in every
shipped language, with the same placeholders and commands, and nothing stale is left behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po

from bot.i18n import LOCALES_DIR, placeholders

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_LANGUAGES = {"en", "ru", "uk", "de", "es"}
COMMAND = re.compile(r"(?<!\w)/[a-z]+")


def source_strings() -> set[str]:
    """What `scripts/i18n update` extracts from bot/ (the same keywords: gettext's and N_)."""
    found = extract_from_dir(
        str(ROOT / "bot"),
        method_map=[("**.py", "python")],
        keywords={**DEFAULT_KEYWORDS, "N_": None},
    )
    return {message for _, _, message, _, _ in found if isinstance(message, str)}


def read_catalog(path: Path) -> Catalog:
    with path.open("rb") as file:
        return read_po(file)


def shipped() -> dict[str, Path]:
    return {p.parent.parent.name: p for p in sorted(LOCALES_DIR.glob("*/LC_MESSAGES/messages.po"))}


def problems(catalog: Catalog, sources: set[str]) -> list[str]:
    """Everything wrong with one language's catalog, as readable lines."""
    found = []
    ids = {m.id for m in catalog if m.id}
    found += [f"untranslated (missing): {s!r}" for s in sorted(sources - ids)]
    found += [f"stale (no longer in the code): {s!r}" for s in sorted(ids - sources)]
    for message in catalog:
        if not message.id or message.id not in sources:
            continue
        source, translation = str(message.id), str(message.string)
        if not translation or message.fuzzy:
            found.append(f"untranslated ({'fuzzy' if message.fuzzy else 'empty'}): {source!r}")
            continue
        try:
            same = placeholders(translation) == placeholders(source)
        except ValueError as exc:
            found.append(f"bad placeholder in {translation!r}: {exc}")
            continue
        if not same:
            found.append(f"placeholders differ: {source!r} -> {translation!r}")
        if sorted(COMMAND.findall(translation)) != sorted(COMMAND.findall(source)):
            found.append(f"commands differ (never translate them): {translation!r}")
    return found


def test_the_required_languages_are_shipped() -> None:
    assert set(shipped()) >= REQUIRED_LANGUAGES


def test_the_source_has_the_strings_we_know_of() -> None:
    """Guards the extraction itself: an empty set would make every catalog look complete."""
    sources = source_strings()
    assert "Welcome back, {name}!" in sources
    assert "Sorry, something went wrong on my side. Please try again later." in sources
    assert any(s.startswith("I am hello-bot.") for s in sources)  # marked with N_


@pytest.mark.parametrize("language", sorted(shipped()))
def test_every_source_string_is_translated_with_its_placeholders(language: str) -> None:
    assert problems(read_catalog(shipped()[language]), source_strings()) == []


def test_the_template_matches_the_source() -> None:
    """bot/locales/messages.pot is what `scripts/i18n update` would write now."""
    template = read_catalog(LOCALES_DIR / "messages.pot")
    assert {m.id for m in template if m.id} == source_strings()


def test_each_language_names_itself_differently() -> None:
    names = {
        code: read_catalog(path).get("English").string  # type: ignore[union-attr]
        for code, path in shipped().items()
    }
    assert names["en"] == "English"
    assert len(set(names.values())) == len(names), names


def test_a_missing_or_mangled_translation_is_reported() -> None:
    """The check above can fail: each kind of mistake in a doctored catalog is found."""
    sources = {"Hello, {name}!", "Bye", "Try /help", "Gone", "Fuzzy"}
    catalog = Catalog(locale="de")
    catalog.add("Hello, {name}!", "Hallo, {nme}!")
    catalog.add("Try /help", "Versuch /hilfe")
    catalog.add("Gone", "")
    catalog.add("Fuzzy", "Unscharf", flags=["fuzzy"])
    catalog.add("Old", "Alt")
    found = "\n".join(problems(catalog, sources))
    assert "untranslated (missing): 'Bye'" in found
    assert "placeholders differ: 'Hello, {name}!'" in found
    assert "commands differ" in found
    assert "untranslated (empty): 'Gone'" in found
    assert "untranslated (fuzzy): 'Fuzzy'" in found
    assert "stale (no longer in the code): 'Old'" in found
