"""Market data for backtests: an L3 market-event stream read in chunks.

The stream is SoA int64 columns ``ts_ns, kind, order_id, side, price, qty`` with the kinds of
hpte.kernels.backtest.api (MK_ADD a resting order joins, MK_CANCEL quantity leaves unexecuted,
MK_EXEC a resting visible order executes (side = the resting side), MK_TRADE a hidden
execution, MK_SEED quantity learned from a snapshot). Sources:

* a LOBSTER message file (``*_message_N.csv``): types 1 -> ADD, 2 and 3 -> CANCEL (by the
  size removed), 4 -> EXEC, 5 -> TRADE; 6 and 7 are skipped. When the matching orderbook file
  lies beside it, the levels that the replay (hpte.engine.md.lobster.replay) learns from it
  (orders that rested before 09:30 or beyond the file's N levels) are merged in after their
  message: quantity added as MK_SEED, quantity that left unseen as MK_CANCEL of an unknown
  order. Tick 100 (one cent in LOBSTER's dollars x 10,000).
* (a LOBSTER day is converted once and cached as such an events file: ``lobster_events_cached``)
* a Parquet or Arrow IPC events file with those six columns (``hpte`` writes it with
  ``write_events``), read in record batches; its tick is given by the caller (default 1).
* columns in memory (``MarketEvents``).

L2 data (price levels, no order ids) is the same six columns with two kinds only: MK_LEVEL
(6: the level (side, price) now shows ``qty`` lots, 0 = empty) and MK_TRADE (4: ``qty`` traded
at ``price``, side = the resting side); order_id is -1 (an L2 events file may leave the column
out). A backtest over it needs a queue model (``--queue``, hpte.kernels.backtest.loop
``x_level_event``). Sources: ``l2_events`` (columns in memory), such an events file, and a
LOBSTER day read as L2 (``lobster_l2_events``: level changes from the orderbook file's
snapshots, trades from the message file's type 4 and 5 rows).

Every chunk is checked (kinds, sides, quantities, prices on the tick grid, time order) and a
bad row raises ``InputError`` naming the column and the row.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from hpte.engine.io import InputError
from hpte.kernels.backtest import api as A

COLUMNS = ("ts_ns", "kind", "order_id", "side", "price", "qty")


def check_chunk(cols: dict, tick: int, row0: int, prev_ts: int, name: str) -> None:
    """Validate one chunk (row numbers are 0-based over the whole stream)."""
    n = len(cols["ts_ns"])
    for c in COLUMNS:
        if c not in cols:
            raise InputError(f"{name}: missing column {c!r} (events need {', '.join(COLUMNS)})")
        if len(cols[c]) != n:
            raise InputError(f"{name}: column {c!r} has {len(cols[c])} rows, ts_ns has {n}")
    if n == 0:
        return

    def bad(mask, what):
        i = int(np.flatnonzero(mask)[0])
        raise InputError(f"{name}: row {row0 + i}: {what}")

    k, side, qty, px, ts = cols["kind"], cols["side"], cols["qty"], cols["price"], cols["ts_ns"]
    m = (k < A.MK_ADD) | (k > A.MK_LEVEL)
    if m.any():
        bad(m, f"kind {int(k[m][0])} is not one of 1..6 (ADD, CANCEL, EXEC, TRADE, SEED, LEVEL)")
    m = (side != 1) & (side != -1)
    if m.any():
        bad(m, f"side {int(side[m][0])} is not +1 or -1")
    m = (qty < 0) | ((qty == 0) & (k != A.MK_LEVEL))
    if m.any():
        bad(m, f"qty {int(qty[m][0])} must be positive (>= 0 for a LEVEL row)")
    m = px <= 0
    if m.any():
        bad(m, f"price {int(px[m][0])} must be positive")
    m = (k != A.MK_TRADE) & (px % tick != 0)
    if m.any():
        bad(m, f"price {int(px[m][0])} is not a multiple of the tick {tick}")
    m = (k == A.MK_ADD) & (cols["order_id"] < 0)
    if m.any():
        bad(m, f"order_id {int(cols['order_id'][m][0])} is negative")
    if ts[0] < prev_ts:
        bad(np.array([True]), "ts_ns is earlier than the row before")
    m = np.diff(ts) < 0
    if m.any():
        i = int(np.flatnonzero(m)[0]) + 1
        raise InputError(f"{name}: row {row0 + i}: ts_ns is earlier than the row before")


@dataclass
class MarketEvents:
    """A market-event stream in memory."""
    ts_ns: np.ndarray
    kind: np.ndarray
    order_id: np.ndarray
    side: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    tick: int = 1
    name: str = "<events>"
    price_scale: float = 1.0   # currency per price unit (LOBSTER: 1e-4 dollars)

    def __post_init__(self):
        for c in COLUMNS:
            setattr(self, c, np.ascontiguousarray(getattr(self, c), dtype=np.int64))
        if int(self.tick) <= 0:
            raise ValueError(f"tick must be positive, got {self.tick}")

    def __len__(self) -> int:
        return len(self.ts_ns)

    def columns(self) -> dict:
        return {c: getattr(self, c) for c in COLUMNS}

    def price_range(self) -> tuple[int, int] | None:
        vis = self.kind != A.MK_TRADE
        if not vis.any():
            return None
        p = self.price[vis]
        return int(p.min()), int(p.max())

    def chunks(self, size: int) -> Iterator[dict]:
        n = len(self)
        prev = np.iinfo(np.int64).min
        for a in range(0, max(n, 1), size):
            c = {k: v[a:a + size] for k, v in self.columns().items()}
            check_chunk(c, self.tick, a, prev, self.name)
            if len(c["ts_ns"]):
                prev = int(c["ts_ns"][-1])
            yield c


_KIND_OF_LOBSTER = np.array([0, A.MK_ADD, A.MK_CANCEL, A.MK_CANCEL, A.MK_EXEC, A.MK_TRADE, 0, 0], np.int64)


def checked_chunks(batches, size: int, tick: int, name: str) -> Iterator[dict]:
    """Row arrays of a stream (int64[n, 6] in COLUMNS order, batch after batch) cut into column
    chunks of at most ``size`` rows, each validated by ``check_chunk`` (row numbers and time order
    over the whole stream)."""
    row = 0
    prev = np.iinfo(np.int64).min
    for o in batches:
        for a in range(0, len(o), size):
            part = o[a:a + size]
            c = {col: np.ascontiguousarray(part[:, j]) for j, col in enumerate(COLUMNS)}
            check_chunk(c, tick, row, prev, name)
            row += len(part)
            prev = int(part[-1, 0])
            yield c


def orderbook_beside(message_path: Path) -> Path | None:
    """The orderbook file LOBSTER names beside a message file, if it is there."""
    name = message_path.name
    if "_message_" not in name:
        return None
    p = message_path.with_name(name.replace("_message_", "_orderbook_"))
    return p if p.is_file() else None


def lobster_events(message_path, orderbook: str | Path | None = "auto") -> MarketEvents:
    """A LOBSTER day as a market-event stream (see the module docstring)."""
    from hpte.engine.md import lobster as L

    mp = Path(message_path)
    m = L.read_messages(mp)
    ob = orderbook_beside(mp) if orderbook == "auto" else (Path(orderbook) if orderbook else None)
    kind = _KIND_OF_LOBSTER[m.type.astype(np.int64)]
    keep = kind != 0
    cols = {"ts_ns": m.time_ns[keep], "kind": kind[keep], "order_id": m.order_id[keep].astype(np.int64),
            "side": m.direction[keep].astype(np.int64), "price": m.price[keep], "qty": m.size[keep]}
    row = np.flatnonzero(keep)
    if ob is not None:
        book = L.read_orderbook(ob)
        r = L.replay(m, book.levels, book)
        g = r.learned
        grow = g["row"].astype(np.int64)
        diff = g["after"] - g["before"]
        nz = diff != 0
        grow, diff = grow[nz], diff[nz]
        lcols = {"ts_ns": m.time_ns[grow], "kind": np.where(diff > 0, A.MK_SEED, A.MK_CANCEL).astype(np.int64),
                 "order_id": np.full(len(grow), -1, np.int64), "side": g["side"][nz].astype(np.int64),
                 "price": g["price"][nz].astype(np.int64), "qty": np.abs(diff).astype(np.int64)}
        key = np.concatenate([row * 2, grow * 2 + 1])
        order = np.argsort(key, kind="stable")
        cols = {c: np.concatenate([cols[c], lcols[c]])[order] for c in COLUMNS}
    return MarketEvents(**cols, tick=100, name=str(mp), price_scale=1e-4)


def l2_events(ts_ns, kind, side, price, qty, tick: int = 1, name: str = "<l2>",
              price_scale: float = 1.0) -> MarketEvents:
    """L2 columns in memory as a market-event stream (order_id -1): kind MK_LEVEL (qty = the
    level's new quantity, 0 = empty) or MK_TRADE (qty traded, side = the resting side)."""
    ts_ns = np.asarray(ts_ns, np.int64)
    return MarketEvents(ts_ns=ts_ns, kind=kind, order_id=np.full(len(ts_ns), -1, np.int64), side=side,
                        price=price, qty=qty, tick=tick, name=name, price_scale=price_scale)


def lobster_l2_rows(time_ns, mtype, mprice, msize, mdir, rows, levels: int) -> dict:
    """A LOBSTER day as L2 rows (columns ts_ns, kind, side, price, qty). Per message i, in
    order: its trade (types 4 and 5: MK_TRADE at its price and size, side = its direction, the
    resting side), then the changes of the orderbook snapshot after it: MK_LEVEL (side, price,
    new quantity) for every shown level whose quantity differs from what the stream last said,
    and MK_LEVEL 0 for a price the stream showed that is now missing *inside* the snapshot's
    window (on a side showing all ``levels`` levels: at or better than its last shown price;
    on a side showing fewer: anywhere). A level that leaves the window keeps its last quantity
    until it shows again (its queue is not known to have moved)."""
    n = len(time_ns)
    out_t, out_k, out_s, out_p, out_q = [], [], [], [], []
    import bisect

    known = {1: {}, -1: {}}
    kprices = {1: [], -1: []}
    EMPTY_HI = 9_999_999_999
    rows = np.asarray(rows, np.int64)
    changed = np.ones(n, bool)
    if n > 1:
        changed[1:] = (rows[1:] != rows[:-1]).any(axis=1)
    tl, ml, pl, sl, dl = (np.asarray(v).tolist() for v in (time_ns, mtype, mprice, msize, mdir))
    rl = rows.tolist()
    chl = changed.tolist()
    for i in range(n):
        t = tl[i]
        if ml[i] == 4 or ml[i] == 5:
            out_t.append(t); out_k.append(A.MK_TRADE); out_s.append(dl[i])
            out_p.append(pl[i]); out_q.append(sl[i])
        if not chl[i]:
            continue
        r = rl[i]
        for side, pc, qc in ((-1, 0, 1), (1, 2, 3)):
            shown = {}
            for lv in range(levels):
                p = r[4 * lv + pc]
                q = r[4 * lv + qc]
                if q > 0 and 0 < p < EMPTY_HI:
                    shown[p] = q
            kn = known[side]
            kp = kprices[side]          # kn's prices, ascending
            if len(shown) >= levels:    # the window: at or better than the last shown level
                if side == 1:
                    cand = kp[bisect.bisect_left(kp, min(shown)):]
                else:
                    cand = kp[:bisect.bisect_right(kp, max(shown))]
            else:
                cand = list(kp)         # the whole side is shown
            for p in cand:
                if p not in shown:
                    out_t.append(t); out_k.append(A.MK_LEVEL); out_s.append(side); out_p.append(p); out_q.append(0)
                    del kn[p]
                    kp.pop(bisect.bisect_left(kp, p))
            for p in sorted(shown):
                if kn.get(p) != shown[p]:
                    out_t.append(t); out_k.append(A.MK_LEVEL); out_s.append(side); out_p.append(p)
                    out_q.append(shown[p])
                    if p not in kn:
                        bisect.insort(kp, p)
                    kn[p] = shown[p]
    a = lambda v: np.asarray(v, np.int64)  # noqa: E731
    return {"ts_ns": a(out_t), "kind": a(out_k), "side": a(out_s), "price": a(out_p), "qty": a(out_q)}


def lobster_l2_events(message_path, orderbook: str | Path | None = None) -> MarketEvents:
    """A LOBSTER day read as L2 data (``lobster_l2_rows``): needs its orderbook file (beside the
    message file, or ``orderbook``). Tick 100, prices in LOBSTER units (dollars x 10,000)."""
    from hpte.engine.md import lobster as L

    mp = Path(message_path)
    ob = Path(orderbook) if orderbook else orderbook_beside(mp)
    if ob is None:
        raise InputError(f"{mp}: L2 data from a LOBSTER day needs its orderbook file beside it "
                         f"({mp.name.replace('_message_', '_orderbook_')})")
    m = L.read_messages(mp)
    book = L.read_orderbook(ob)
    if len(book) != len(m.time_ns):
        raise InputError(f"{ob}: {len(book)} rows, the message file has {len(m.time_ns)}")
    c = lobster_l2_rows(m.time_ns, m.type, m.price, m.size, m.direction, book.rows, book.levels)
    return l2_events(c["ts_ns"], c["kind"], c["side"], c["price"], c["qty"], tick=100, name=f"{mp} [L2]",
                     price_scale=1e-4)


def lobster_cache_path(message_path, l2: bool = False) -> Path:
    """Where the converted stream of a LOBSTER day is cached: the cache folder
    (``$HPTE_CACHE_DIR``, else ``~/.cache/hpte/backtest``) / lobster / a key of the message and
    orderbook files' paths, sizes and modification times and of this conversion's source."""
    import hashlib

    from hpte.engine.backtest.strategy import cache_dir
    from hpte.engine.md import lobster as L

    mp = Path(message_path).resolve()
    h = hashlib.sha256()
    for f in (mp, orderbook_beside(mp)):
        if f is not None:
            st = f.stat()
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\0".encode())
    for src in (__file__, L.__file__):
        h.update(Path(src).read_bytes())
    return cache_dir() / "lobster" / f"{mp.stem}{'_l2' if l2 else ''}_{h.hexdigest()[:20]}.parquet"


def lobster_events_cached(message_path, l2: bool = False):
    """A LOBSTER day's stream (``l2``: read as L2 data, ``lobster_l2_events``), converted once
    and cached as a Parquet events file (read back in record batches, so memory stays flat);
    ``HPTE_DATA_CACHE=0`` turns the cache off. A change to either file (size or modification
    time) or to the conversion's code converts anew."""
    import os

    convert = lobster_l2_events if l2 else lobster_events
    if os.environ.get("HPTE_DATA_CACHE", "1") == "0":
        return convert(message_path)
    path = lobster_cache_path(message_path, l2)
    if not path.is_file():
        ev = convert(message_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        write_events(tmp, ev)
        os.replace(tmp, path)       # atomic: a concurrent run never reads half a file
    f = EventFile(path, tick=100, price_scale=1e-4)
    f.name = str(message_path) + (" [L2]" if l2 else "")
    return f


class EventFile:
    """A Parquet or Arrow IPC events file, read in record batches."""

    def __init__(self, path, tick: int = 1, price_scale: float = 1.0):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such file")
        self.tick = int(tick)
        self.name = str(self.path)
        self.price_scale = price_scale
        if self.tick <= 0:
            raise ValueError(f"tick must be positive, got {tick}")

    def _batches(self, size: int):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.path.suffix.lower() in (".arrow", ".ipc", ".feather"):
            with pa.memory_map(str(self.path)) as src:
                reader = pa.ipc.open_file(src)
                for i in range(reader.num_record_batches):
                    b = reader.get_batch(i)
                    for a in range(0, b.num_rows, size):
                        yield b.slice(a, size)
        else:
            try:
                f = pq.ParquetFile(self.path)
            except Exception as e:  # noqa: BLE001 - pyarrow's many error types
                raise InputError(f"{self.path}: not a Parquet file ({e})") from None
            missing = [c for c in COLUMNS if c not in f.schema_arrow.names and c != "order_id"]
            if missing:
                raise InputError(f"{self.path}: missing column(s) {', '.join(missing)} "
                                 f"(events need {', '.join(COLUMNS)})")
            yield from f.iter_batches(batch_size=size, columns=[c for c in COLUMNS if c in f.schema_arrow.names])

    def _cols(self, b) -> dict:
        names = b.schema.names
        for c in COLUMNS:
            if c not in names and c != "order_id":
                raise InputError(f"{self.path}: missing column {c!r} (events need {', '.join(COLUMNS)})")
        out = {c: np.asarray(b.column(names.index(c)).to_numpy(zero_copy_only=False), dtype=np.int64)
               for c in COLUMNS if c in names}
        if "order_id" not in out:      # L2 data: no order ids
            out["order_id"] = np.full(b.num_rows, -1, np.int64)
        return out

    def price_range(self, size: int = 1 << 18) -> tuple[int, int] | None:
        lo = hi = None
        for b in self._batches(size):
            names = b.schema.names
            kind = np.asarray(b.column(names.index("kind")).to_numpy(zero_copy_only=False))
            price = np.asarray(b.column(names.index("price")).to_numpy(zero_copy_only=False))
            vis = kind != A.MK_TRADE
            if vis.any():
                p = price[vis]
                lo = int(p.min()) if lo is None else min(lo, int(p.min()))
                hi = int(p.max()) if hi is None else max(hi, int(p.max()))
        return None if lo is None else (lo, hi)

    def chunks(self, size: int) -> Iterator[dict]:
        row = 0
        prev = np.iinfo(np.int64).min
        for b in self._batches(size):
            c = self._cols(b)
            check_chunk(c, self.tick, row, prev, self.name)
            row += len(c["ts_ns"])
            if len(c["ts_ns"]):
                prev = int(c["ts_ns"][-1])
            yield c


def write_events(path, events: MarketEvents, row_group: int = 1 << 20) -> Path:
    """Write a market-event stream as Parquet (the ``EventFile`` format)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({c: events.columns()[c] for c in COLUMNS}), p, row_group_size=row_group)
    return p


ITCH_SUFFIXES = (".itch", ".itch50", ".nasdaq_itch50")


def is_itch_path(p: Path) -> bool:
    """An ITCH 5.0 file by its name: ``*.itch``, ``*.itch50``, ``*.NASDAQ_ITCH50`` (``.gz`` too)."""
    name = p.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(ITCH_SUFFIXES)


def _stock_locate(data, stock: str, name: str) -> int:
    """The locate code of ``stock`` in decoded ITCH data: from its R (stock directory) message,
    else from its first A/F message."""
    want = str(stock).strip().encode("ascii", "replace")
    if not want or len(want) > 8:
        raise InputError(f"{name}: stock {stock!r} must be 1 to 8 ASCII characters")
    want = want.ljust(8)
    for letter in "RAF":
        t = data.tables[letter]
        hit = np.flatnonzero(t["stock"] == want)
        if hit.size:
            return int(t["stock_locate"][hit[0]])
    known = sorted({bytes(x).decode("ascii", "replace").strip() for x in data.tables["R"]["stock"]})
    hint = f" (its stock directory has {len(known):,}: {', '.join(known[:8])}{', ...' if len(known) > 8 else ''})" \
        if known else " (it has no stock directory and no add order of that stock)"
    raise InputError(f"{name}: no stock {want.decode().strip()!r}{hint}")


def _itch_ops(d, loc: int) -> dict:
    """The order ops (hpte.kernels.backtest.itch_events ``OP_*``) of stock locate ``loc`` in
    decoded ITCH data, merged in stream order: columns seq, code, ts, ref, ref2, side, px, n."""
    from hpte.kernels.backtest import itch_events as IK

    T = d.tables
    parts = []

    def put(letter, code, ref, ref2=None, side=None, px=None, n=None):
        t = T[letter]
        m = t["stock_locate"] == loc
        k = int(m.sum())
        if not k:
            return
        z = np.zeros(k, np.int64)
        bs = t["buy_sell_indicator"][m] if side else None
        parts.append(dict(
            seq=t["seq"][m].astype(np.int64), code=np.full(k, code, np.int64), ts=t["timestamp"][m].astype(np.int64),
            ref=t[ref][m].astype(np.int64), ref2=t[ref2][m].astype(np.int64) if ref2 else z,
            side=np.where(bs == b"B", 1, np.where(bs == b"S", -1, 0)).astype(np.int64) if side else z,
            px=t[px][m].astype(np.int64) if px else z, n=t[n][m].astype(np.int64) if n else z))

    put("A", IK.OP_ADD, "order_reference_number", side=True, px="price", n="shares")
    put("F", IK.OP_ADD, "order_reference_number", side=True, px="price", n="shares")
    put("E", IK.OP_EXEC, "order_reference_number", n="executed_shares")
    put("C", IK.OP_EXEC, "order_reference_number", n="executed_shares")
    put("X", IK.OP_CANCEL, "order_reference_number", n="cancelled_shares")
    put("D", IK.OP_DELETE, "order_reference_number")
    put("U", IK.OP_REPLACE, "original_order_reference_number", ref2="new_order_reference_number", px="price", n="shares")
    put("P", IK.OP_TRADE, "order_reference_number", side=True, px="price", n="shares")
    if parts:
        ops = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
        o = np.argsort(ops["seq"], kind="stable")
        return {c: np.ascontiguousarray(v[o]) for c, v in ops.items()}
    return {c: np.zeros(0, np.int64) for c in ("seq", "code", "ts", "ref", "ref2", "side", "px", "n")}


class _ItchOps:
    """itch_ops_cpu over successive op batches, its live-order table carried and grown."""

    def __init__(self):
        from hpte.kernels.backtest import itch_events as IK
        from hpte.kernels.backtest import loop as LK

        self.IK, self.LK = IK, LK
        self.bits = 4
        self.keys = np.full(1 << self.bits, LK.EMPTY_KEY, np.int64)
        self.vals = np.zeros((1 << self.bits, 2), np.int64)
        self.counts = np.zeros(IK.NCOUNT, np.int64)

    def run(self, ops: dict) -> np.ndarray:
        """The event rows (int64[k, 6]) of one batch of ops."""
        IK, LK = self.IK, self.LK
        adds = int(((ops["code"] == IK.OP_ADD) | (ops["code"] == IK.OP_REPLACE)).sum())
        live = int(np.count_nonzero(self.keys != LK.EMPTY_KEY))
        need = max(4, int(2 * (live + adds) + 2).bit_length())
        if need > self.bits:        # at least twice the live orders plus this batch's adds
            k2 = np.full(1 << need, LK.EMPTY_KEY, np.int64)
            v2 = np.zeros((1 << need, 2), np.int64)
            LK.rehash_cpu(self.keys, self.vals, k2, v2, need)
            self.keys, self.vals, self.bits = k2, v2, need
        out = np.zeros((2 * len(ops["code"]), 6), np.int64)
        w = IK.itch_ops_cpu(ops["code"], ops["ts"], ops["ref"], ops["ref2"], ops["side"], ops["px"], ops["n"],
                            self.keys, self.vals, self.bits, out, self.counts)
        return out[:w]

    def anomalies(self) -> dict:
        c, IK = self.counts, self.IK
        return {"unknown_reference": int(c[IK.C_UNKNOWN]), "clipped": int(c[IK.C_CLIPPED]),
                "bad_adds": int(c[IK.C_BAD_ADD])}


def itch_events(data, stock: str | None, tick: int = 100, name: str | None = None,
                price_scale: float = 1e-4) -> MarketEvents:
    """One stock of an ITCH 5.0 file (a path, or decoded ItchData) as a market-event stream in
    memory (hpte.kernels.backtest.itch_events has the rules; ``ItchSource`` streams a file in
    chunks instead). Prices stay in ITCH Price(4) units ($0.0001); ``tick`` is the price grid
    of the book (100: one cent, NASDAQ's tick above $1)."""
    from hpte.engine.md.itch import ItchData, read_itch

    if isinstance(data, ItchData):
        d = data
        name = name or "<itch>"
    else:
        d = read_itch(data)
        name = name or str(data)
    if not stock:
        raise InputError(f"{name}: an ITCH file holds many stocks: choose one with --stock NAME")
    loc = _stock_locate(d, stock, name)
    run = _ItchOps()
    o = run.run(_itch_ops(d, loc))
    ev = MarketEvents(ts_ns=o[:, 0], kind=o[:, 1], order_id=o[:, 2], side=o[:, 3], price=o[:, 4], qty=o[:, 5],
                      tick=tick, name=f"{name} [{str(stock).strip()}]", price_scale=price_scale)
    ev.anomalies = run.anomalies()
    return ev


class ItchSource:
    """One stock of an ITCH 5.0 file (plain or ``.gz``) streamed: decoded ``chunk_bytes`` of
    stream at a time (hpte.engine.md.itch.iter_itch), each batch's ops turned into market
    events with the live-order table carried across batches, so memory does not grow with the
    file's length (only with the live orders). The same rows as ``itch_events`` for any
    ``chunk_bytes``; the stock's locate is taken from the first batch that names it (R, else A/F);
    ``price_range`` is one more pass over the file."""

    def __init__(self, path, stock: str | None, tick: int = 100, price_scale: float = 1e-4,
                 chunk_bytes: int | None = None):

        self.path = Path(path)
        if not stock:
            raise InputError(f"{self.path}: an ITCH file holds many stocks: choose one with --stock NAME")
        self.stock = str(stock).strip()
        self.tick = int(tick)
        self.price_scale = price_scale
        self.chunk_bytes = int(chunk_bytes or (8 << 20))
        self.name = f"{self.path} [{self.stock}]"
        self.anomalies = None
        self.loc = self._locate()

    def _batches(self):
        from hpte.engine.md.itch import iter_itch

        return iter_itch(self.path, chunk_bytes=self.chunk_bytes)

    def _locate(self) -> int:
        known = []
        for d in self._batches():
            try:
                return _stock_locate(d, self.stock, str(self.path))
            except InputError as e:
                known.append(str(e))
        raise InputError(known[0] if len(known) == 1 else
                         f"{self.path}: no stock {self.stock!r} (no stock directory or add order names it)")

    def price_range(self) -> tuple[int, int] | None:
        lo = hi = None
        for d in self._batches():
            for letter in ("A", "F", "U"):
                t = d.tables[letter]
                m = (t["stock_locate"] == self.loc) & (t["price"] > 0)
                if m.any():
                    p = t["price"][m].astype(np.int64)
                    lo = int(p.min()) if lo is None else min(lo, int(p.min()))
                    hi = int(p.max()) if hi is None else max(hi, int(p.max()))
        return None if lo is None else (lo, hi)

    def chunks(self, size: int) -> Iterator[dict]:
        run = _ItchOps()
        yield from checked_chunks((run.run(_itch_ops(d, self.loc)) for d in self._batches()), size, self.tick,
                                  self.name)
        self.anomalies = run.anomalies()


def order_file_events(path, stock: str | None = None, tick: int = 1) -> MarketEvents:
    """An hpte order file matched by the engine first, whole and in memory (``hpte match``'s
    pipeline), its events published as ITCH 5.0 (``hpte match --itch``: hpte.engine.md.itch_out),
    decoded and turned into one symbol's market-event stream (``itch_events``). Prices in engine
    ticks. ``stock``: the symbol (``7`` or its ITCH name ``SYM7``); default: the file's only
    symbol. ``OrderFileSource`` gives the same rows streamed (what ``open_data`` uses); this is
    its whole-file reference."""
    from hpte.engine.io import read_orders
    from hpte.engine.md.itch import encode_itch, parse_itch
    from hpte.engine.md.itch_out import events_to_itch, stock_name
    from hpte.engine.pipeline import match_columns

    cols = read_orders(path)
    syms = np.unique(cols["symbol"]) if len(cols["ts_ns"]) else np.zeros(0, np.uint32)
    if stock is None:
        if len(syms) != 1:
            raise InputError(f"{path}: {len(syms)} symbols in the order file "
                             f"({', '.join(map(str, syms[:8].tolist()))}); choose one with --stock")
        name = stock_name(int(syms[0]))
    else:
        s = str(stock).strip()
        name = stock_name(int(s)) if s.isdigit() else s
    run = match_columns(cols)
    out = events_to_itch(run.events, n_fills=run.fills.n_rows if hasattr(run.fills, "n_rows") else None)
    data = parse_itch(encode_itch(out.tables), label=str(path))
    return itch_events(data, name, tick=tick, name=str(path), price_scale=1.0)


_EV_COLS = ("seq", "ts_ns", "symbol", "order_id", "side", "event", "reason", "price_ticks", "qty", "leaves_qty")


class _Tables:
    """ITCH message tables (``ItchOut.tables``) in the shape ``_itch_ops`` reads (decoded ItchData)."""

    def __init__(self, tables: dict):
        empty = {"stock_locate": np.zeros(0, np.uint16)}
        self.tables = {k: tables.get(k, empty) for k in "AFECXDUP"}


class OrderFileSource:
    """An hpte order file (Parquet or Arrow IPC, engine/schema.py ORDER_COLUMNS) streamed as one
    symbol's market events: read ``batch_rows`` rows at a time, each batch submitted to one
    Engine (its books carry across batches, and ``Engine.submit`` gives the outputs of one big
    batch), the batch's order events published as ITCH messages (``events_to_itch``) and turned
    into market events (``itch_ops_cpu``, live-order table carried as in ``ItchSource``). The
    same rows as ``order_file_events`` (the whole file in memory) for any ``batch_rows``;
    memory grows with the resting orders, not with the file.

    Orders still resting from earlier batches that a batch touches are put before its events as
    ACCEPTED events of their current price and quantity (from ``Engine.book_l3``), so that the
    ITCH publisher sees every event since they rested; their ITCH references (numbered over the
    whole file, as one run would) are carried. STOP / STOP_LIMIT orders and icebergs are refused
    (ITCH out does not publish them: the message names the column and row). ``price_range`` is
    one more pass over the file (matching again)."""

    what = "order file"

    def __init__(self, path, stock: str | None = None, tick: int = 1, batch_rows: int | None = None):
        from hpte.engine.md.itch_out import stock_name, symbol_from_stock_name

        self.path = Path(path)
        self.tick = int(tick)
        self.price_scale = 1.0
        self.batch_rows = int(batch_rows or (1 << 16))
        if self.batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        self.name = str(self.path)
        self.anomalies = None
        syms = self._symbols()
        if stock is None:
            if len(syms) != 1:
                raise InputError(f"{self.path}: {len(syms)} symbols in the {self.what} "
                                 f"({', '.join(map(str, syms[:8].tolist()))}); choose one with --stock")
            self.symbol = int(syms[0])
        else:
            s = str(stock).strip()
            sym = int(s) if s.isdigit() else symbol_from_stock_name(s)
            if sym is None or sym not in set(syms.tolist()):
                names = [stock_name(int(x)) for x in syms[:8]]
                shown = stock_name(sym) if s.isdigit() and sym <= 0xFFFFFFFF else s
                raise InputError(f"{self.path}: no stock {shown!r} (the {self.what} has {len(syms):,} symbol(s): "
                                 f"{', '.join(names)}{', ...' if len(syms) > 8 else ''})")
            self.symbol = sym
        self.stock = stock_name(self.symbol)

    # -- reading ----------------------------------------------------------------------------
    def _record_batches(self, columns=None):
        import pyarrow as pa
        import pyarrow.parquet as pq

        ipc = self.path.suffix.lower() in (".arrow", ".ipc", ".feather")
        try:
            if ipc:
                with pa.memory_map(str(self.path)) as src:
                    reader = pa.ipc.open_file(src)
                    for i in range(reader.num_record_batches):
                        b = reader.get_batch(i)
                        if columns is not None:
                            b = b.select([c for c in columns if c in b.schema.names])
                        for a in range(0, b.num_rows, self.batch_rows):
                            yield b.slice(a, self.batch_rows)
            else:
                f = pq.ParquetFile(self.path)
                cols = None if columns is None else [c for c in columns if c in f.schema_arrow.names]
                yield from f.iter_batches(batch_size=self.batch_rows, columns=cols)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
            raise InputError(f"{self.path}: not a readable {'Arrow IPC' if ipc else 'Parquet'} file ({e})") from None

    def _symbols(self) -> np.ndarray:
        from hpte.engine import schema as S

        seen, n = [], 0
        has = None
        for b in self._record_batches(["symbol"]):
            if has is None:
                has = "symbol" in b.schema.names
            n += b.num_rows
            if has:
                seen.append(np.unique(np.asarray(b.column(0).to_numpy(zero_copy_only=False))))
        if not n:
            return np.zeros(0, np.uint32)
        if not has:
            return np.array([dict((c[0], c[3]) for c in S.ORDER_COLUMNS)["symbol"]], np.uint32)
        return np.unique(np.concatenate(seen)).astype(np.int64)

    def _order_batches(self):
        """Validated order columns per batch (``order_columns``); errors name the file's row."""
        import re

        from hpte.engine import schema as S
        from hpte.engine.io import order_columns

        row = 0
        for b in self._record_batches():
            try:
                c = order_columns(b)
            except InputError as e:
                msg = re.sub(r"\brow (\d+)", lambda m: f"row {row + int(m.group(1))}", str(e), count=1)
                raise InputError(f"{self.path}: {msg}") from None
            new = c["action"] == S.ACT_NEW
            stops = np.flatnonzero(new & ((c["order_type"] == S.OT_STOP) | (c["order_type"] == S.OT_STOP_LIMIT)))
            if stops.size:
                raise InputError(f"{self.path}: column 'order_type' row {row + int(stops[0])}: a STOP / STOP_LIMIT "
                                 "order; backtest data from an order file cannot hold them yet (ITCH out does "
                                 "not publish them)")
            ice = np.flatnonzero(new & (c["display_qty"] != 0))
            if ice.size:
                raise InputError(f"{self.path}: column 'display_qty' row {row + int(ice[0])}: an iceberg order; "
                                 "backtest data from an order file cannot hold them yet (its events carry the "
                                 "hidden reserve, which the market would not see)")
            yield row, c
            row += len(c["ts_ns"])

    # -- matching and publishing ---------------------------------------------------------------
    def _event_batches(self):
        """Per order batch: the market-event rows (int64[k, 6]) of the chosen symbol."""
        from hpte.engine import schema as S
        from hpte.engine.engine import Engine
        from hpte.engine.md.itch import ItchError
        from hpte.engine.md.itch_out import events_to_itch
        from hpte.engine.pipeline import warm_up

        warm_up("cpu", False)
        eng = Engine()
        run = _ItchOps()
        live = {}                        # (symbol, order id) -> its current ITCH reference
        l3 = None                        # resting orders after the previous batch
        next_ref = 1
        for row, c in self._order_batches():
            try:
                res = eng.submit(c, outputs="events", copy=False)
            except InputError as e:
                raise InputError(f"{self.path}: rows {row}..{row + len(c['ts_ns']) - 1}: {e}") from None
            ev = {k: np.asarray(res.events[k]) for k in _EV_COLS}
            keep = ev["event"] != S.EV_REJECTED
            # resting orders this batch touches: ACCEPTED at their book price and quantity first
            syn_i = np.zeros(0, np.int64)
            if l3 is not None and len(l3["order_id"]) and keep.any():
                cand = keep & np.isin(ev["order_id"], l3["order_id"])
                if cand.any():
                    pairs = set(zip(ev["symbol"][cand].tolist(), ev["order_id"][cand].tolist()))
                    syn_i = np.array(sorted(l3["index"][p] for p in pairs if p in l3["index"]), np.int64)
            s = len(syn_i)
            if s:
                t0 = int(c["ts_ns"][0])
                syn = {"seq": -np.arange(s, 0, -1, dtype=np.int64), "ts_ns": np.full(s, t0, np.int64),
                       "symbol": l3["symbol"][syn_i], "order_id": l3["order_id"][syn_i],
                       "side": l3["side"][syn_i], "event": np.full(s, S.EV_ACCEPTED, np.uint8),
                       "reason": np.full(s, S.R_NONE, np.uint8), "price_ticks": l3["price_ticks"][syn_i],
                       "qty": l3["qty"][syn_i], "leaves_qty": l3["qty"][syn_i]}
                ev = {k: np.concatenate([syn[k].astype(np.int64), ev[k].astype(np.int64)]) for k in _EV_COLS}
                syn_ref = np.array([live[(int(a), int(b))] for a, b in zip(syn["symbol"], syn["order_id"])],
                                   np.int64)
            else:
                syn_ref = np.zeros(0, np.int64)
            try:
                out = events_to_itch(ev)
            except ItchError as e:
                raise InputError(f"{self.path}: rows {row}..{row + len(c['ts_ns']) - 1}: {e}") from None
            nref = len(out.ref_symbol)
            base = next_ref

            def real(r):        # this batch's reference -> the whole file's
                r = np.asarray(r, np.int64)
                return np.where(r <= s, syn_ref[np.clip(r - 1, 0, max(s - 1, 0))] if s else 0, base + r - s - 1)

            assert nref >= s, (nref, s)
            refs_new = next_ref + np.arange(nref - s, dtype=np.int64)
            live.update(zip(zip(out.ref_symbol[s:].tolist(), out.ref_order_id[s:].tolist()), refs_new.tolist()))
            next_ref += nref - s
            # the chosen symbol's messages, references renumbered over the whole file
            tab = {}
            hit = np.flatnonzero(out.symbols == self.symbol)
            loc = int(hit[0]) + 1 if hit.size else -1
            for k in "AEXDU":
                t = out.tables[k]
                m = t["stock_locate"] == loc
                if k == "A":
                    m &= t["order_reference_number"].astype(np.int64) > s
                t = {col: v[m] for col, v in t.items()}
                for col in ("order_reference_number", "original_order_reference_number", "new_order_reference_number"):
                    if col in t:
                        t[col] = real(t[col])
                tab[k] = t
            o = run.run(_itch_ops(_Tables(tab), loc)) if loc > 0 else np.zeros((0, 6), np.int64)
            # the book after this batch: which orders rest, and their references
            b = eng.book_l3()
            keys = list(zip(b["symbol"].tolist(), b["order_id"].tolist()))
            live = {kk: live[kk] for kk in keys}
            l3 = {"symbol": b["symbol"], "order_id": b["order_id"], "side": b["side"],
                  "price_ticks": b["price_ticks"], "qty": b["qty"], "index": {kk: i for i, kk in enumerate(keys)}}
            yield o
        self.anomalies = run.anomalies()

    def price_range(self) -> tuple[int, int] | None:
        lo = hi = None
        for o in self._event_batches():
            vis = o[:, 1] != A.MK_TRADE
            if vis.any():
                p = o[vis, 4]
                lo = int(p.min()) if lo is None else min(lo, int(p.min()))
                hi = int(p.max()) if hi is None else max(hi, int(p.max()))
        return None if lo is None else (lo, hi)

    def chunks(self, size: int) -> Iterator[dict]:
        yield from checked_chunks(self._event_batches(), size, self.tick, self.name)


class FillsFile(OrderFileSource):
    """A fills file (``hpte match --fills``: engine/schema.py FILL_COLUMNS) as L2 data with
    trades only, streamed in record batches: per fill of the chosen symbol (``--stock``, as for
    order files) one MK_TRADE row at its time, price and quantity, side = the maker's (the
    resting side, -taker_side), order_id -1. There is no book: a backtest over it needs a queue
    model (``--queue``), and a strategy sees trades only (its book copy stays empty).
    ``price_range`` is the trades' range (the ladder must hold them)."""

    what = "fills file"
    NEED = ("ts_ns", "taker_side", "price_ticks", "qty")

    def _event_batches(self):
        row = 0
        for b in self._record_batches(("ts_ns", "symbol", "taker_side", "price_ticks", "qty")):
            names = b.schema.names
            miss = [c for c in self.NEED if c not in names]
            if miss:
                raise InputError(f"{self.path}: missing column(s) {', '.join(miss)} (a fills file has "
                                 f"{', '.join(self.NEED)} and symbol)")
            get = {c: np.asarray(b.column(names.index(c)).to_numpy(zero_copy_only=False)) for c in names}
            n = b.num_rows
            m = get["symbol"].astype(np.int64) == self.symbol if "symbol" in get else np.ones(n, bool)
            ts = get["ts_ns"].astype(np.int64)
            ts_i = np.flatnonzero(m)
            ts = ts[m]
            ts = ts % 86_400_000_000_000        # ns since midnight, as the order file's stream
            ts_side = get["taker_side"].astype(np.int64)[m]
            bad = np.flatnonzero((ts_side != 1) & (ts_side != -1))
            if bad.size:
                raise InputError(f"{self.path}: column 'taker_side' row {row + int(ts_i[bad[0]])}: "
                                 f"{int(ts_side[bad[0]])} is not +1 or -1")
            o = np.empty((len(ts), 6), np.int64)
            o[:, 0] = ts
            o[:, 1] = A.MK_TRADE
            o[:, 2] = -1
            o[:, 3] = -ts_side
            o[:, 4] = get["price_ticks"].astype(np.int64)[m]
            o[:, 5] = get["qty"].astype(np.int64)[m]
            row += n
            yield o
        self.anomalies = {}

    def price_range(self) -> tuple[int, int] | None:
        lo = hi = None
        for o in self._event_batches():
            if len(o):
                lo = int(o[:, 4].min()) if lo is None else min(lo, int(o[:, 4].min()))
                hi = int(o[:, 4].max()) if hi is None else max(hi, int(o[:, 4].max()))
        return None if lo is None else (lo, hi)


def _file_names(p: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if p.suffix.lower() in (".arrow", ".ipc", ".feather"):
            with pa.memory_map(str(p)) as src:
                return pa.ipc.open_file(src).schema.names
        return pq.ParquetFile(p).schema_arrow.names
    except Exception:  # noqa: BLE001 - not readable here: EventFile names the problem
        return []


def _is_fills_file(p: Path) -> bool:
    n = _file_names(p)
    return "maker_order_id" in n and "taker_side" in n and "price_ticks" in n


def _is_order_file(p: Path) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if p.suffix.lower() in (".arrow", ".ipc", ".feather"):
            with pa.memory_map(str(p)) as src:
                names = pa.ipc.open_file(src).schema.names
        else:
            names = pq.ParquetFile(p).schema_arrow.names
    except Exception:  # noqa: BLE001 - not readable here: EventFile names the problem
        return False
    return "price_ticks" in names and "kind" not in names


def open_data(data, tick: int | None = None, stock: str | None = None, l2: bool = False):
    """A source from a path or a MarketEvents: a LOBSTER message CSV (``l2``: read as L2 data
    from its orderbook file), an ITCH 5.0 file (``stock`` required), an hpte order file
    (matched by the engine first; ``price_ticks`` column) or a Parquet/IPC events file (L3 or
    L2 rows)."""
    if isinstance(data, MarketEvents) or (hasattr(data, "chunks") and hasattr(data, "price_range")):
        return data         # a source already (MarketEvents, EventFile, ItchSource, ...)
    p = Path(data)
    if not p.is_file():
        raise InputError(f"{p}: no such data file")
    if p.suffix.lower() == ".csv":
        return lobster_events_cached(p, l2=l2)
    if is_itch_path(p):
        return ItchSource(p, stock, tick=tick or 100)
    if _is_fills_file(p):
        return FillsFile(p, stock, tick=tick or 1)
    if _is_order_file(p):
        return OrderFileSource(p, stock, tick=tick or 1)
    if stock is not None:
        raise InputError(f"{p}: --stock applies to ITCH and order files, not to an events file")
    return EventFile(p, tick=tick or 1)
