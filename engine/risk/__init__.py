"""Risk: limits and their TOML configuration (limits), risk state, positions and the stand-alone batch
check (state), call auctions (auction). The checks run inside the matching kernel (kernels/risk)."""
