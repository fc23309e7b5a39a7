"""Test strategy: never acts (the replay alone)."""


def on_book(md, orders, params, state, act):
    return None
