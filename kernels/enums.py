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
