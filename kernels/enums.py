"""Integer enumerations shared by every kernel and by engine/schema.py (which adds names and
Arrow schemas). Kept in kernels/ so that the dependency direction stays cli -> engine -> kernels;
numba freezes these module-level ints as compile-time constants."""

# Input enumerations (the order file, ../shared/FORMATS.md)
BUY = 1
SELL = -1

ACT_NEW = 0
ACT_CANCEL = 1
ACT_REPLACE = 2

OT_LIMIT = 0
OT_MARKET = 1
OT_STOP = 2          # stop (stop-market): a MARKET order once the last trade reaches stop_price_ticks
OT_STOP_LIMIT = 3    # stop-limit: a LIMIT order at price_ticks once the last trade reaches its stop price

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

# Output enumerations
EV_ACCEPTED = 1
EV_REJECTED = 2
EV_CANCELLED = 3
EV_EXPIRED = 4
EV_FILLED = 5
EV_PARTIALLY_FILLED = 6
EV_REPLACED = 7

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
R_PRICE_BAND = 16          # a taker's remainder could neither trade inside the price band nor rest
R_LIMIT_STATE = 17         # breaker event cause: the book stayed at its band for limit_state_ns
R_VELOCITY = 18            # breaker event cause: the price moved more than velocity_ticks
R_HALT = 19                # breaker event cause: market-wide halt / resume by command
R_AUCTION = 20             # fills and events of a reopening (or stand-alone) call auction
R_EXPIRE_TIME = 21         # a good-till-date order reached its expire_ts_ns (EXPIRED event)
R_EXPIRE_IN_PAST = 22      # NEW with expire_ts_ns at or before its own ts_ns
R_INVALID_EXPIRE = 23      # NEW with a negative expire_ts_ns, or one on an order that cannot rest
R_INVALID_STOP_PRICE = 24  # STOP / STOP_LIMIT with stop_price_ticks <= 0 (REPLACE of a stop: < 0)
R_UNEXPECTED_STOP_PRICE = 25  # stop_price_ticks on a LIMIT / MARKET order (NEW, or REPLACE of one)
R_INVALID_STOP_TIF = 26    # STOP / STOP_LIMIT with tif IOC or FOK (a stop waits: GTC or DAY)
R_STOP_NOT_SUPPORTED = 27  # STOP / STOP_LIMIT on an engine with risk checks (not yet supported there)
R_INVALID_DISPLAY_QTY = 28  # display_qty < 0, > qty, on an order that cannot rest (MARKET, IOC, FOK,
                            # STOP, STOP_LIMIT) or non-zero on a REPLACE row
R_ICEBERG_NOT_SUPPORTED = 29  # an iceberg (display_qty > 0) on an engine with risk checks

# Risk reject reasons (kernels/risk/checks.py; README "Risk limits")
RR_MAX_ORDER_QTY = 100
RR_MAX_ORDER_NOTIONAL = 101
RR_PRICE_COLLAR = 102
RR_MAX_OPEN_ORDERS = 103
RR_MAX_POSITION = 104
RR_CREDIT_LIMIT = 105
RR_MAX_ORDERS_PER_SECOND = 106
RR_KILL_SWITCH = 107
RR_SYMBOL_PAUSED = 108
RR_NOT_PERMITTED = 109
RR_NO_REFERENCE_PRICE = 110
RR_RISK_OVERFLOW = 111

# Trading-status events of the circuit breakers (events stream: order_id 0, side 0; the cause
# in `reason`; deltas stream: a row with side 0 whose `orders` column is the new TS_* state)
EV_LIMIT_STATE = 8         # the book reached its price band (trading continues inside it)
EV_PAUSED = 9              # trading pause: orders accepted and cancelled, nothing trades
EV_AUCTION = 10            # call period of the reopening auction
EV_RESUMED = 11            # continuous trading again (after a limit state or an auction)
EV_HALTED = 12             # market-wide halt by command
EV_TRIGGERED = 13          # a stop order's stop price was reached: it enters the book now

TS_CONTINUOUS = 0
TS_LIMIT = 1
TS_PAUSED = 2
TS_AUCTION = 3
TS_HALTED = 4
