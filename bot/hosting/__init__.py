"""The bot host: many bots in one process, each read from BOTS_DIR and given its fair share."""
