"""The hello-bot kopf operator: reconciles `TelegramBot` resources.

Importing this package registers every handler with kopf's default registry, which is what
`kopf run -m hello_operator` relies on.
"""

from hello_operator import handlers as handlers
from hello_operator import watching as watching
