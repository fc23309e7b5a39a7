"""``hpte serve`` and ``hpte journal replay`` (cli/server/commands.py)."""
