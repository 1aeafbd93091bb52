"""Business logic. Nothing below this line imports aiogram."""
