"""Market-data kernels: ITCH 5.0 decoding, LOBSTER replay planning, the ring buffer, streaming bars."""
