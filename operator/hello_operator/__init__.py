"""The hello-bot kopf operator: reconciles `TelegramBot` resources.

Importing this package registers every handler with kopf's default registry, which is what
`kopf run -m hello_operator` relies on.
"""

from hello_operator import on_children as on_children
from hello_operator import on_telegrambot as on_telegrambot
