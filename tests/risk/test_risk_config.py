"""Risk TOML loading: validation errors name the key path, unknown keys get a suggestion, the
compiled arrays and id -> row mappings, the override rule, and `hpte risk check`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hpte.cli.main import app
from hpte.engine.risk.limits import (BREAKER_KEYS, LIMIT_KEYS, UNSET, RiskConfigError, RiskLimits,
                                     load_limits)

runner = CliRunner()

EXAMPLE = """
[defaults]
max_order_qty = 1_000
max_order_notional = 5_000_000
price_collar_bps = 500
max_open_orders = 200
max_position = 10_000
credit_limit = 100_000_000
max_orders_per_second = 1_000

[accounts.17]
max_order_qty = 500
symbols = [1, 2, 3]

[accounts.4]
kill = true
credit_limit = 5_000

[symbols.3]
max_order_qty = 50
reference_price_ticks = 10_150

[breakers]
band_bps = 500
band_window_ns = "5m"
limit_state_ns = "15s"
pause_ns = 300_000_000_000
velocity_ticks = 200
velocity_window_ns = "1s"
auction_ns = "10s"
"""


def err(text: str) -> str:
    with pytest.raises(RiskConfigError) as e:
        RiskLimits.from_toml(text)
    return str(e.value)


@pytest.mark.parametrize("text,msg", [
    ("[accounts.17]\nmax_order_qty = -3", "accounts.17.max_order_qty: must be a positive integer, got -3"),
    ("[defaults]\nmax_order_qty = 0", "defaults.max_order_qty: must be a positive integer, got 0"),
    ("[defaults]\nmax_order_qty = 1.5", "defaults.max_order_qty: must be a positive integer, got 1.5"),
    ("[defaults]\nmax_order_qty = true", "defaults.max_order_qty: must be a positive integer, got true"),
    ("[defaults]\nmax_order_qty = '5'", "defaults.max_order_qty: must be a positive integer, got '5'"),
    ("[defaults]\nmax_position = -1", "defaults.max_position: must be a non-negative integer, got -1"),
    ("[defaults]\nmax_position = 4611686018427387905",
     "defaults.max_position: must be a non-negative integer (at most 4,611,686,018,427,387,904), got 4611686018427387905"),
    ("[defaults]\nprice_collar_bps = 2000000", "defaults.price_collar_bps: must be an integer in [0, 1000000], got 2000000"),
    ("[defaults]\nmax_orders_per_second = 0", "defaults.max_orders_per_second: must be an integer in [1, 1000000000], got 0"),
    ("[defaults]\nmax_oder_qty = 3", "defaults.max_oder_qty: unknown key (did you mean 'max_order_qty'?)"),
    ("[defaults]\nsymbols = [1]", "defaults.symbols: unknown key"),
    ("[defaults]\nkill = 1", "defaults.kill: must be true or false, got 1"),
    ("[symbols.3]\nkill = true", "symbols.3.kill: unknown key"),
    ("[symbols.3]\nreference_price_ticks = 0", "symbols.3.reference_price_ticks: must be a positive integer, got 0"),
    ("[accounts.1]\nsymbols = [1, -2]", "accounts.1.symbols[1]: must be a symbol id in [0, 4294967295], got -2"),
    ("[accounts.1]\nsymbols = 3", "accounts.1.symbols: must be an array of symbol ids, got 3"),
    ("[accounts.x]\nkill = true", "accounts.x: account id must be a decimal integer in [0, 4294967295]"),
    ("[accounts.4294967296]", "accounts.4294967296: account id must be a decimal integer"),
    ("[symbols.007]", "symbols.007: symbol id must be a decimal integer"),
    ("accounts = 3", "accounts: must be a table, got 3"),
    ("[account.1]\nkill = true", "account: unknown key (did you mean 'accounts'?)"),
    ("[breakers]\npause_ns = '5 parsecs'", "breakers.pause_ns: must be a positive duration"),
    ("[breakers]\npause_ns = -5", "breakers.pause_ns: must be a positive duration"),
    ("[breakers]\nband_bps = 0", "breakers.band_bps: must be an integer in [1, 1000000], got 0"),
    ("[breakers]\nvelocity_tick = 3", "breakers.velocity_tick: unknown key (did you mean 'velocity_ticks'?)"),
    ("[defaults\nx = 1", "invalid TOML"),
])
def test_errors_name_the_key(text, msg):
    assert msg in err(text)


def test_load_names_the_file(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("[accounts.17]\nmax_order_qty = -3\n")
    with pytest.raises(RiskConfigError) as e:
        load_limits(p)
    assert str(e.value) == f"{p}: accounts.17.max_order_qty: must be a positive integer, got -3"
    assert e.value.key == "accounts.17.max_order_qty"
    with pytest.raises(RiskConfigError, match="no such file"):
        load_limits(tmp_path / "missing.toml")


def test_compiled_arrays_and_rows():
    lim = RiskLimits.from_toml(EXAMPLE)
    assert lim.account_ids.tolist() == [4, 17] and lim.symbol_ids.tolist() == [3]
    assert lim.default_limits.tolist() == [1_000, 5_000_000, 500, 10_000, 200, 100_000_000, 1_000]
    assert list(LIMIT_KEYS) == ["max_order_qty", "max_order_notional", "price_collar_bps", "max_position",
                                "max_open_orders", "credit_limit", "max_orders_per_second"]
    row17 = lim.account_limits[1]
    assert row17[0] == 500 and (row17[1:] == UNSET).all()
    assert (lim.account_limits[-1] == UNSET).all()           # unconfigured accounts
    assert lim.account_rows([17, 4, 99]).tolist() == [1, 0, 2]
    assert lim.symbol_rows([3, 1]).tolist() == [0, 1]
    assert lim.account_kill.tolist() == [1, 0, 0] and lim.global_kill is False
    assert lim.symbol_reference.tolist() == [10_150, 0]
    assert lim.permitted([17, 4, 99], [1, 3, 4]).tolist() == [[1, 1, 0], [1, 1, 1], [1, 1, 1]]
    assert dict(zip(BREAKER_KEYS, lim.breaker_params.tolist())) == {
        "band_bps": 500, "band_window_ns": 300 * 10**9, "limit_state_ns": 15 * 10**9, "pause_ns": 300 * 10**9,
        "velocity_ticks": 200, "velocity_window_ns": 10**9, "auction_ns": 10 * 10**9}
    with pytest.raises(ValueError):
        lim.account_limits[0, 0] = 1                          # compiled arrays are read-only


def test_left_out_means_not_applied():
    lim = RiskLimits.from_toml("")
    assert (lim.default_limits == UNSET).all() and (lim.breaker_params == UNSET).all()
    assert lim.effective("max_order_qty", 1, 1) is None
    lim = RiskLimits.from_toml("[breakers]\nauction_ns = '2s'")
    assert lim.breakers == {"auction_ns": 2 * 10**9}


def test_override_rule():
    lim = RiskLimits.from_toml(EXAMPLE + "\n[symbols.9]\nmax_order_qty = 5000\ncredit_limit = 7\n")
    e = lim.effective
    assert e("max_order_qty", 17, 3) == 50      # both set: the stricter
    assert e("max_order_qty", 17, 1) == 500     # the account's own (above or below the default)
    assert e("max_order_qty", 1, 9) == 5000     # the symbol's own, even above the default
    assert e("max_order_qty", 1, 1) == 1000     # defaults
    assert e("credit_limit", 4, 9) == 5000      # account-wide: account layer (the symbol's applies per symbol)
    assert e("credit_limit", 1, 9) == 100_000_000
    with pytest.raises(KeyError):
        e("nope", 1, 1)


def test_cli_check_ok_and_bad(tmp_path):
    p = tmp_path / "risk.toml"
    p.write_text(EXAMPLE)
    r = runner.invoke(app, ["risk", "check", str(p)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == f"{p}: ok (2 accounts, 1 symbol, 7 breaker parameters)"
    assert "account 17:" in lines and "  max_order_qty  500" in lines and "  symbols        [1, 2, 3]" in lines
    assert "symbol 3:" in lines and "breakers:" in lines
    r = runner.invoke(app, ["risk", "check", str(p), "--json"])
    assert json.loads(r.output)["accounts"]["17"]["symbols"] == [1, 2, 3]
    p.write_text("[accounts.17]\nmax_order_qty = -3\n")
    r = runner.invoke(app, ["risk", "check", str(p)])
    assert r.exit_code == 1
    assert r.output.strip() == f"hpte risk check: error: {p}: accounts.17.max_order_qty: must be a positive integer, got -3"


def test_limits_compile_into_engine_rows():
    from hpte.engine.risk.state import RiskEngine
    from hpte.kernels.risk import checks as K
    lim = RiskLimits.from_toml(EXAMPLE)
    e = RiskEngine(lim)
    e.set_quotes(3)                              # gives symbol 3 a row
    e.set_kill(False, account=17)                # gives account 17 a row
    a17 = e.acct[e._accts.lookup(np.array([17]))[0]]
    assert a17[K.A_LIM + K.L_MAX_ORDER_QTY] == 500 and a17[K.A_LIM + K.L_MAX_ORDER_NOTIONAL] == UNSET
    assert a17[K.A_LIM + K.L_CREDIT_LIMIT] == 100_000_000        # account-wide: the default
    s3 = e.sym[e._syms.lookup(np.array([3]))[0]]
    assert s3[K.S_LIM + K.L_MAX_ORDER_QTY] == 50 and s3[K.S_STATIC] == 10_150
