"""Risk kernels: pre-trade checks and positions (checks), circuit breakers (breaker), call auctions (auction)."""
