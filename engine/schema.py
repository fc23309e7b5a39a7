"""Every entity's schema, defined once: integer enumerations, numpy column dtypes, Arrow schemas.

Kernels import the integer constants from here (they are plain module-level ints, which numba
freezes as compile-time constants). Units: prices in integer ticks (int64), quantities in integer
lots (int64), times in int64 nanoseconds. No floats anywhere in matching.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

# ---------------------------------------------------------------------------------------------
# Input enumerations (the order file, ../shared/FORMATS.md)
# ---------------------------------------------------------------------------------------------
BUY = 1
SELL = -1

ACT_NEW = 0
ACT_CANCEL = 1
ACT_REPLACE = 2

OT_LIMIT = 0
OT_MARKET = 1

TIF_GTC = 0
TIF_IOC = 1
TIF_FOK = 2
TIF_DAY = 3

# Legacy benchmark column `kind`: 0 NEW LIMIT GTC, 1 CANCEL, 2 NEW LIMIT IOC.
KIND_NEW_GTC = 0
KIND_CANCEL = 1
KIND_NEW_IOC = 2

# Self-trade prevention modes (one per engine).
STP_NONE = 0
STP_CANCEL_NEWEST = 1
STP_CANCEL_OLDEST = 2
STP_CANCEL_BOTH = 3
STP_DECREMENT = 4
STP_NAMES = {
    "none": STP_NONE,
    "cancel-newest": STP_CANCEL_NEWEST,
    "cancel-oldest": STP_CANCEL_OLDEST,
    "cancel-both": STP_CANCEL_BOTH,
    "decrement": STP_DECREMENT,
}

# ---------------------------------------------------------------------------------------------
# Output enumerations
# ---------------------------------------------------------------------------------------------
EV_ACCEPTED = 1
EV_REJECTED = 2
EV_CANCELLED = 3
EV_EXPIRED = 4
EV_FILLED = 5
EV_PARTIALLY_FILLED = 6
EV_REPLACED = 7
EVENT_NAMES = {
    EV_ACCEPTED: "ACCEPTED",
    EV_REJECTED: "REJECTED",
    EV_CANCELLED: "CANCELLED",
    EV_EXPIRED: "EXPIRED",
    EV_FILLED: "FILLED",
    EV_PARTIALLY_FILLED: "PARTIALLY_FILLED",
    EV_REPLACED: "REPLACED",
}

R_NONE = 0
R_INVALID_ACTION = 1
R_INVALID_SIDE = 2
R_INVALID_ORDER_TYPE = 3
R_INVALID_TIF = 4
R_INVALID_QTY = 5
R_INVALID_PRICE = 6
R_INVALID_POST_ONLY = 7
R_DUPLICATE_ORDER_ID = 8
R_UNKNOWN_ORDER = 9
R_NOT_OWNER = 10
R_POST_ONLY_WOULD_TAKE = 11
R_SELF_TRADE = 12
R_FOK_NOT_FILLABLE = 13
R_END_OF_SESSION = 14
R_PRICE_OUT_OF_RANGE = 15  # resting would stretch the book's ladder past Engine(max_levels=...)
REASON_NAMES = {
    R_NONE: "",
    R_INVALID_ACTION: "INVALID_ACTION",
    R_INVALID_SIDE: "INVALID_SIDE",
    R_INVALID_ORDER_TYPE: "INVALID_ORDER_TYPE",
    R_INVALID_TIF: "INVALID_TIF",
    R_INVALID_QTY: "INVALID_QTY",
    R_INVALID_PRICE: "INVALID_PRICE",
    R_INVALID_POST_ONLY: "INVALID_POST_ONLY",
    R_DUPLICATE_ORDER_ID: "DUPLICATE_ORDER_ID",
    R_UNKNOWN_ORDER: "UNKNOWN_ORDER",
    R_NOT_OWNER: "NOT_OWNER",
    R_POST_ONLY_WOULD_TAKE: "POST_ONLY_WOULD_TAKE",
    R_SELF_TRADE: "SELF_TRADE",
    R_FOK_NOT_FILLABLE: "FOK_NOT_FILLABLE",
    R_END_OF_SESSION: "END_OF_SESSION",
    R_PRICE_OUT_OF_RANGE: "PRICE_OUT_OF_RANGE",
}

# ---------------------------------------------------------------------------------------------
# Column schemas: (name, numpy dtype, required, default) for input; (name, dtype) for outputs.
# ---------------------------------------------------------------------------------------------
ORDER_COLUMNS: tuple[tuple[str, np.dtype, bool, int], ...] = (
    ("ts_ns", np.dtype(np.int64), True, 0),
    ("order_id", np.dtype(np.uint64), True, 0),
    ("side", np.dtype(np.int8), True, 0),
    ("price_ticks", np.dtype(np.int64), True, 0),
    ("qty", np.dtype(np.int64), True, 0),
    ("action", np.dtype(np.uint8), False, ACT_NEW),
    ("order_type", np.dtype(np.uint8), False, OT_LIMIT),
    ("tif", np.dtype(np.uint8), False, TIF_GTC),
    ("account", np.dtype(np.uint32), False, 0),
    ("symbol", np.dtype(np.uint32), False, 0),
    ("post_only", np.dtype(np.uint8), False, 0),
)
ORDER_DTYPE = np.dtype([(n, t) for n, t, _, _ in ORDER_COLUMNS], align=True)

FILL_COLUMNS: tuple[tuple[str, np.dtype], ...] = (
    ("seq", np.dtype(np.uint64)),
    ("ts_ns", np.dtype(np.int64)),
    ("symbol", np.dtype(np.uint32)),
    ("taker_order_id", np.dtype(np.uint64)),
    ("maker_order_id", np.dtype(np.uint64)),
    ("taker_account", np.dtype(np.uint32)),
    ("maker_account", np.dtype(np.uint32)),
    ("taker_side", np.dtype(np.int8)),
    ("price_ticks", np.dtype(np.int64)),
    ("qty", np.dtype(np.int64)),
)

EVENT_COLUMNS: tuple[tuple[str, np.dtype], ...] = (
    ("seq", np.dtype(np.uint64)),
    ("ts_ns", np.dtype(np.int64)),
    ("symbol", np.dtype(np.uint32)),
    ("order_id", np.dtype(np.uint64)),
    ("account", np.dtype(np.uint32)),
    ("side", np.dtype(np.int8)),
    ("event", np.dtype(np.uint8)),      # EV_* code; the file writer turns it into the name
    ("reason", np.dtype(np.uint8)),     # R_* code; likewise
    ("price_ticks", np.dtype(np.int64)),
    ("qty", np.dtype(np.int64)),        # quantity this event concerns (fill, cancel, expiry)
    ("leaves_qty", np.dtype(np.int64)),  # open quantity of the order after the event
)

DELTA_COLUMNS: tuple[tuple[str, np.dtype], ...] = (
    ("seq", np.dtype(np.uint64)),
    ("ts_ns", np.dtype(np.int64)),
    ("symbol", np.dtype(np.uint32)),
    ("side", np.dtype(np.int8)),
    ("price_ticks", np.dtype(np.int64)),
    ("qty", np.dtype(np.int64)),        # total resting quantity at the level after the change
    ("orders", np.dtype(np.int64)),     # resting orders at the level after the change
)

LEVEL_COLUMNS: tuple[tuple[str, np.dtype], ...] = (
    ("symbol", np.dtype(np.uint32)),
    ("side", np.dtype(np.int8)),
    ("level", np.dtype(np.int32)),      # 0 = best
    ("price_ticks", np.dtype(np.int64)),
    ("qty", np.dtype(np.int64)),
    ("orders", np.dtype(np.int64)),
)

L3_COLUMNS: tuple[tuple[str, np.dtype], ...] = (
    ("symbol", np.dtype(np.uint32)),
    ("side", np.dtype(np.int8)),
    ("price_ticks", np.dtype(np.int64)),
    ("order_id", np.dtype(np.uint64)),
    ("account", np.dtype(np.uint32)),
    ("qty", np.dtype(np.int64)),
    ("tif", np.dtype(np.uint8)),
)


def arrow_schema(columns) -> pa.Schema:
    """Arrow schema for a column list of this module (input or output)."""
    return pa.schema([pa.field(c[0], pa.from_numpy_dtype(c[1]), nullable=False) for c in columns])


ORDER_SCHEMA = arrow_schema(ORDER_COLUMNS)
FILL_SCHEMA = arrow_schema(FILL_COLUMNS)
DELTA_SCHEMA = arrow_schema(DELTA_COLUMNS)
LEVEL_SCHEMA = arrow_schema(LEVEL_COLUMNS)
L3_SCHEMA = arrow_schema(L3_COLUMNS)
# In files, `event` and `reason` are dictionary-encoded strings.
EVENT_FILE_SCHEMA = pa.schema(
    [
        pa.field(n, pa.dictionary(pa.int8(), pa.string()) if n in ("event", "reason")
                 else pa.from_numpy_dtype(t), nullable=False)
        for n, t in EVENT_COLUMNS
    ]
)
