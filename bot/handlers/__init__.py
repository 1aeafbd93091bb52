"""One Router per feature, built by its module's create_router(); bot.app includes them in order.

Routers are built per Dispatcher rather than at import time: an aiogram Router can belong to
one parent only, and tests (or a process serving several bots) build several Dispatchers.
"""
