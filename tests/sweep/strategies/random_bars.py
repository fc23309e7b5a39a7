"""A test bar strategy that trades pseudo-randomly from its parameters and the bar index:
target percents (long and short), target sizes and flat, reading history and its own state.

seed : mixes into the decision hash; rate : probability of an order per bar (0..1);
size : scale of target sizes.
"""
from hpte.kernels.backtest import bars as bb

PARAMS = {"seed": 1.0, "rate": 0.3, "size": 2.0}
STATE_SIZE = 3      # 0: bars seen, 1: running sum of closes, 2: last order's bar index


def mix(i, seed):
    x = (i * 2654435761 + int(seed) * 40503 + 12345) % 2147483647
    x = (x * 48271) % 2147483647
    return x / 2147483647.0


def on_bar(ctx, data, params, state, act):
    i = int(ctx[bb.BC_INDEX])
    state[0] += 1.0
    state[1] += ctx[bb.BC_CLOSE]
    u = mix(i, params[0])
    if u >= params[1]:
        return
    v = mix(i + 7919, params[0])
    avg = state[1] / state[0]
    if v < 0.3:
        bb.target_percent(act, 1.0 if ctx[bb.BC_CLOSE] < avg else 0.5)
    elif v < 0.45:
        bb.target_percent(act, -0.5)
    elif v < 0.75:
        bb.target_size(act, params[2] * (v - 0.5))
    else:
        bb.close_position(act)
    state[2] = i
