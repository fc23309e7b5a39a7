"""The network gateway (``pip install 'hpte[server]'``): REST and WebSocket adapters over one
order-entry core, a single writer that owns the Engine, an append-only journal and snapshots.

    config.py    SERVER.toml: keys -> account and role, batching, durability, limits
    journal.py   Arrow IPC records with a checksum each, in segment files; snapshots
    state.py     gateway state derived from engine outputs (id map, order table, market data)
    core.py      the order-entry core: sessions, the request queue, the single writer
    protocol.py  wire validation (JSON orders, Arrow frames) and report encoding
    app.py       the ASGI app: FastAPI REST routes and the WebSocket adapters
    binance.py   the Binance-compatible REST subset (/api/v3), another adapter over the core

Nothing here is imported by ``import hpte`` or by the matching core.
"""
