"""One Router per feature; bot.app includes them in order, the catch-all last."""
