"""/language: the user picks the language the bot speaks to them, from an inline keyboard."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.handlers.start import profile_of
from bot.i18n import language_names
from bot.services.users import UserService
from bot.tenant import Tenant

CHOSEN_MARK = "✓ "


class LanguageChoice(CallbackData, prefix="language"):
    code: str


def language_keyboard(i18n: I18n, current: str) -> InlineKeyboardMarkup:
    """One button per shipped catalog, each in its own language; the current one marked."""
    keyboard = InlineKeyboardBuilder()
    for code, name in language_names(i18n).items():
        text = CHOSEN_MARK + name if code == current else name
        keyboard.button(text=text, callback_data=LanguageChoice(code=code))
    keyboard.adjust(2)
    return keyboard.as_markup()


async def language_handler(message: Message, i18n: I18n) -> None:
    """Offers the languages."""
    await message.answer(
        _("Which language should I speak?"),
        reply_markup=language_keyboard(i18n, i18n.current_locale),
    )


async def language_chosen_handler(
    query: CallbackQuery,
    callback_data: LanguageChoice,
    user_service: UserService,
    tenant: Tenant,
    i18n: I18n,
) -> None:
    """Stores the choice and confirms it in the chosen language."""
    if callback_data.code not in i18n.locales:  # an old keyboard, or forged callback data
        await query.answer(_("I do not speak that language any more."), show_alert=True)
        return
    await user_service.choose_language(
        profile_of(query.from_user), callback_data.code, tenant=tenant
    )
    with i18n.use_locale(callback_data.code):
        # Translators: the answer to choosing your language on /language; name your language.
        confirmation = _("Done: I will speak English with you.")
    if isinstance(query.message, Message):
        # The keyboard turns into the answer, so an old keyboard cannot be pressed again.
        await query.message.edit_text(confirmation)
        await query.answer()
    else:  # the message is too old to edit: a notification says it instead
        await query.answer(confirmation)


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(language_handler, Command("language"))
    router.callback_query.register(language_chosen_handler, LanguageChoice.filter())
    return router
