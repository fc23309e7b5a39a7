"""Offline replay of a journal from its first record (no snapshot), for audit and tests."""
from __future__ import annotations

import json
from pathlib import Path

from . import journal as J
from .state import Gateway


def replay_journal(d: str | Path):
    """(gateway, [fills], [events], cut) of a whole journal; files are not modified."""
    d = Path(d)
    meta = json.loads((d / "meta.json").read_text())
    risk = None
    if meta.get("risk_toml") is not None:
        from hpte.engine.risk.limits import RiskLimits
        risk = RiskLimits.from_toml(meta["risk_toml"], source=f"{d}/meta.json")
    gw = Gateway(meta["symbols"], stp=meta["stp"], risk=risk)
    recs, _nxt, cut = J.read_records(d, repair=False)
    fills, events = [], []
    for _recno, kind, payload in recs:
        if kind == J.K_ORDERS:
            b = J.decode_batch(payload)
            res, _b, _md = gw.apply_orders({n: b.column(n).to_numpy() for n in b.schema.names}, replay=True)
        else:
            res, _b, _md = gw.apply_command(json.loads(payload))
        fills.append({k: res.fills[k] for k in res.fills})
        events.append({k: res.events[k] for k in res.events})
    return gw, fills, events, cut
