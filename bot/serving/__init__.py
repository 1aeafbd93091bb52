"""How updates arrive (webhook, long polling, the console) and the probes that serve beside them."""
