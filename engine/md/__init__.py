"""Market data: ITCH 5.0 in (itch) and out (itch_out), ITCH book building (itch_book), LOBSTER (lobster),
the shared-memory ring buffer (ring), streaming OHLCV/VWAP bars (bars)."""
