"""Every entity's schema, defined once: integer enumerations, numpy column dtypes, Arrow schemas.

The integer constants are defined in kernels/enums.py (kernels import them there; numba
freezes them as compile-time constants) and re-exported here with their names. Units: prices in integer ticks (int64), quantities in integer
lots (int64), times in int64 nanoseconds. No floats anywhere in matching.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from hpte.kernels.enums import (  # noqa: F401  (re-exported: the one place they are defined)
    BUY, SELL, ACT_NEW, ACT_CANCEL, ACT_REPLACE, OT_LIMIT,
    OT_MARKET, OT_STOP, OT_STOP_LIMIT, EV_TRIGGERED, R_INVALID_STOP_PRICE, R_UNEXPECTED_STOP_PRICE,
    R_INVALID_STOP_TIF, R_STOP_NOT_SUPPORTED, R_INVALID_DISPLAY_QTY, R_ICEBERG_NOT_SUPPORTED, TIF_GTC, TIF_IOC, TIF_FOK, TIF_DAY, KIND_NEW_GTC,
    KIND_CANCEL, KIND_NEW_IOC, STP_NONE, STP_CANCEL_NEWEST, STP_CANCEL_OLDEST, STP_CANCEL_BOTH,
    STP_DECREMENT, EV_ACCEPTED, EV_REJECTED, EV_CANCELLED, EV_EXPIRED, EV_FILLED,
    EV_PARTIALLY_FILLED, EV_REPLACED, R_NONE, R_INVALID_ACTION, R_INVALID_SIDE, R_INVALID_ORDER_TYPE,
    R_INVALID_TIF, R_INVALID_QTY, R_INVALID_PRICE, R_INVALID_POST_ONLY, R_DUPLICATE_ORDER_ID, R_UNKNOWN_ORDER,
    R_NOT_OWNER, R_POST_ONLY_WOULD_TAKE, R_SELF_TRADE, R_FOK_NOT_FILLABLE, R_END_OF_SESSION, R_PRICE_OUT_OF_RANGE,
    R_PRICE_BAND, R_LIMIT_STATE, R_VELOCITY, R_HALT, R_AUCTION, RR_MAX_ORDER_QTY, RR_MAX_ORDER_NOTIONAL,
    R_EXPIRE_TIME, R_EXPIRE_IN_PAST, R_INVALID_EXPIRE, RR_PRICE_COLLAR, RR_MAX_OPEN_ORDERS, RR_MAX_POSITION, RR_CREDIT_LIMIT, RR_MAX_ORDERS_PER_SECOND,
    RR_KILL_SWITCH, RR_SYMBOL_PAUSED, RR_NOT_PERMITTED, RR_NO_REFERENCE_PRICE, RR_RISK_OVERFLOW,
    EV_LIMIT_STATE, EV_PAUSED, EV_AUCTION, EV_RESUMED, EV_HALTED, TS_CONTINUOUS, TS_LIMIT, TS_PAUSED,
    TS_AUCTION, TS_HALTED,
)

# ---------------------------------------------------------------------------------------------
# Names of the enumerations (the integer values live in kernels/enums.py)
# ---------------------------------------------------------------------------------------------
STP_NAMES = {
    "none": STP_NONE,
    "cancel-newest": STP_CANCEL_NEWEST,
    "cancel-oldest": STP_CANCEL_OLDEST,
    "cancel-both": STP_CANCEL_BOTH,
    "decrement": STP_DECREMENT,
}

EVENT_NAMES = {
    EV_ACCEPTED: "ACCEPTED",
    EV_REJECTED: "REJECTED",
    EV_CANCELLED: "CANCELLED",
    EV_EXPIRED: "EXPIRED",
    EV_FILLED: "FILLED",
    EV_PARTIALLY_FILLED: "PARTIALLY_FILLED",
    EV_REPLACED: "REPLACED",
    EV_LIMIT_STATE: "LIMIT_STATE",
    EV_PAUSED: "PAUSED",
    EV_AUCTION: "AUCTION",
    EV_RESUMED: "RESUMED",
    EV_HALTED: "HALTED",
    EV_TRIGGERED: "TRIGGERED",
}
BREAKER_EVENTS = (EV_LIMIT_STATE, EV_PAUSED, EV_AUCTION, EV_RESUMED, EV_HALTED)

TRADING_STATE_NAMES = {TS_CONTINUOUS: "CONTINUOUS", TS_LIMIT: "LIMIT_STATE", TS_PAUSED: "PAUSED",
                       TS_AUCTION: "AUCTION", TS_HALTED: "HALTED"}

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
    R_PRICE_BAND: "PRICE_BAND",
    R_LIMIT_STATE: "LIMIT_STATE",
    R_VELOCITY: "VELOCITY",
    R_HALT: "HALT",
    R_AUCTION: "AUCTION",
    R_EXPIRE_TIME: "EXPIRE_TIME",
    R_EXPIRE_IN_PAST: "EXPIRE_IN_PAST",
    R_INVALID_EXPIRE: "INVALID_EXPIRE",
    R_INVALID_STOP_PRICE: "INVALID_STOP_PRICE",
    R_UNEXPECTED_STOP_PRICE: "UNEXPECTED_STOP_PRICE",
    R_INVALID_STOP_TIF: "INVALID_STOP_TIF",
    R_STOP_NOT_SUPPORTED: "STOP_NOT_SUPPORTED",
    R_INVALID_DISPLAY_QTY: "INVALID_DISPLAY_QTY",
    R_ICEBERG_NOT_SUPPORTED: "ICEBERG_NOT_SUPPORTED",
    # risk limits (kernels/risk/checks.py): the limit's name in upper case, or a named state
    RR_MAX_ORDER_QTY: "MAX_ORDER_QTY",
    RR_MAX_ORDER_NOTIONAL: "MAX_ORDER_NOTIONAL",
    RR_PRICE_COLLAR: "PRICE_COLLAR",
    RR_MAX_OPEN_ORDERS: "MAX_OPEN_ORDERS",
    RR_MAX_POSITION: "MAX_POSITION",
    RR_CREDIT_LIMIT: "CREDIT_LIMIT",
    RR_MAX_ORDERS_PER_SECOND: "MAX_ORDERS_PER_SECOND",
    RR_KILL_SWITCH: "KILL_SWITCH",
    RR_SYMBOL_PAUSED: "SYMBOL_PAUSED",
    RR_NOT_PERMITTED: "NOT_PERMITTED",
    RR_NO_REFERENCE_PRICE: "NO_REFERENCE_PRICE",
    RR_RISK_OVERFLOW: "RISK_OVERFLOW",
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
    ("expire_ts_ns", np.dtype(np.int64), False, 0),   # good-till-date: 0 = none
    ("stop_price_ticks", np.dtype(np.int64), False, 0),   # STOP / STOP_LIMIT trigger price: 0 = none
    ("display_qty", np.dtype(np.int64), False, 0),   # iceberg slice size (lots): 0 = not an iceberg
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
