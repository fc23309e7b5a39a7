"""Plain-Python reference of matching with pre-trade risk checks (Engine(risk=...) without
breakers): the reference matcher (matcher.py) with the risk reference (risk_ref.py) plugged in
where the README puts the checks, and the risk state moved by what each row did.

Per row: matching's own checks, then ``RiskRef.check`` (check and commit), then matching; after
the row, its fills move positions (taker first, then maker) and its expiries and self-trade
cancels / decrements release open quantity; the symbol's best bid and ask become the risk
reference's quotes (mid)."""
from __future__ import annotations

from hpte.engine import schema as S

from .matcher import ReferenceEngine
from .risk_ref import RiskRef


class RiskReferenceEngine(ReferenceEngine):
    stops_supported = False     # process_row_risk rejects STOP / STOP_LIMIT (STOP_NOT_SUPPORTED)
    icebergs_supported = False  # ... and icebergs (ICEBERG_NOT_SUPPORTED)

    def __init__(self, limits, stp: str = "none"):
        super().__init__(stp)
        self.risk = RiskRef(limits)

    def _risk(self, row, leaves: int) -> int:
        return self.risk.check(row)

    def _process(self, row):
        f0, e0 = len(self._fills), len(self._events)
        super()._process(row)
        sym = row["symbol"]
        fills = [dict(zip([n for n, _ in S.FILL_COLUMNS], f)) for f in self._fills[f0:]]
        if fills:
            self.risk.apply_fills(fills)
        for (_seq, _ts, s, oid, _acct, _side, ev, reason, _px, qty, _lv) in self._events[e0:]:
            if ev == S.EV_EXPIRED or (reason == S.R_SELF_TRADE and ev in (S.EV_CANCELLED, S.EV_REPLACED)):
                self.risk.release(s, oid, qty)
        book = self.books.get(sym)
        if book is not None:
            bid, ask = book.best(S.BUY), book.best(S.SELL)
            self.risk.quotes[sym] = (bid or 0, ask or 0)
