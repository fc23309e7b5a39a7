"""Offline replay of a journal, for audit and tests: from its first record when the journal (with
its archive, when retired segments were archived) still starts at record 0, else from the oldest
valid snapshot that the segments held still follow (the summary says which)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

from . import journal as J
from .core import _fresh_gateway, apply_record
from .state import Gateway


def replay_journal(d: str | Path, archive: str | Path | None = None):
    """(gateway, [fills], [events], cut, from_record) of a journal; files are not modified.
    from_record is 0 for a whole replay, else the record number of the snapshot it starts at."""
    d = Path(d)
    meta = json.loads((d / "meta.json").read_text())
    segs = J.segment_firsts([archive, d])
    start = segs[0][0] if segs else 0
    if start == 0:
        gw = _fresh_gateway(meta, f"{d}/meta.json")
    else:
        gw = None
        for recno, p in sorted(J.snapshots(d)):          # oldest first: the longest replay
            blob = J.snapshot_blob(p) if recno >= start else None
            if blob is not None:
                gw = Gateway.restore(pickle.loads(blob))
                break
        if gw is None:
            raise J.JournalError(f"{d}: records 0 to {start - 1} were retired and no valid snapshot "
                                 f"follows them (pass the archive directory)")
        start = gw.recno
    recs, _nxt, cut = J.read_records(d, start=start, repair=False, archive=archive)
    fills, events = [], []
    for _recno, kind, payload in recs:
        res, _b, _md = apply_record(gw, kind, payload)
        fills.append({k: res.fills[k] for k in res.fills})
        events.append({k: res.events[k] for k in res.events})
    return gw, fills, events, cut, start
