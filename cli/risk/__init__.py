"""``hpte risk ...``: risk configuration checks and call auctions."""
