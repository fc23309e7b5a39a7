"""Gateway throughput and client-measured acknowledgement latency over loopback.

Runs, in one go and against the same stack (uvicorn + uvloop + httptools + the websockets
protocol, Starlette WebSockets, orjson):

  echo      a plain WebSocket echo server (the stack's own limit) with the same JSON messages
  ws-json   JSON single-order messages from several connections (pipelined, `--window` in flight each)
  ws-paced  JSON single orders at a fixed total rate (default 10,000/s): the latency at that load
  arrow     binary Arrow IPC frames of `--frame-rows` orders
  rest      REST POST /v1/orders, one order per call, several concurrent clients
  md-native ws-json again with `--subscribers` clients on the native market stream /v1/ws/market
            (symbols 0-2: snapshot, then L2 deltas + trades, several messages a frame)
  md-binance ws-json again with `--subscribers` clients on Binance's combined stream
            /stream?streams=<s>@depth@100ms/<s>@trade for the 3 symbols (one event a frame)
            The fan-out cost per subscriber: (gateway CPU per order with the subscribers - without)
            / subscribers, each against the ws-json phase of the same run.

The gateway runs with its journal at the default durability (fsync = "batch") in a temporary
directory. Latency is from the client's send to the client's receipt of the ack (which the
server sends after the batch is journaled, fsynced and matched). Every phase is bounded by
`--seconds` and by a message count. Usage:

    python bench/bench_server.py [--seconds 5] [--clients 4] [--json out.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

KEY = "bench-trader-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def echo_app():
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    async def echo(ws):
        await ws.accept()
        try:
            while True:
                await ws.send_text(await ws.receive_text())
        except Exception:
            return

    return Starlette(routes=[WebSocketRoute("/echo", echo)])


def run_echo(port: int) -> None:
    import uvicorn

    import warnings
    warnings.filterwarnings("ignore")
    uvicorn.run(echo_app(), host="127.0.0.1", port=port, loop="uvloop", http="httptools", ws="websockets",
                ws_per_message_deflate=False, log_level="warning")


def wait_ready(url: str, proc, timeout=300) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    return sum(cpu_us_sys(pid))


def cpu_us_sys(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return int(parts[11]) / os.sysconf("SC_CLK_TCK"), int(parts[12]) / os.sysconf("SC_CLK_TCK")


def pct(lat_ns: list) -> dict:
    a = np.array(lat_ns, np.float64) / 1e3
    if not len(a):
        return {"p50_us": None, "p99_us": None, "p999_us": None}
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)),
            "p999_us": float(np.percentile(a, 99.9))}


def new_order(oid: int) -> dict:
    """A new limit order around a mid of 100,000 ticks on 3 symbols: 1 in 16 marketable."""
    side = "buy" if oid & 1 else "sell"
    off = (oid * 2654435761) % 16
    px = 100_000 - off - 1 if side == "buy" else 100_000 + off + 1
    if off == 0:
        px = 100_010 if side == "buy" else 99_990
    return {"order_id": oid, "symbol": oid % 3, "side": side, "price": px, "qty": 1 + oid % 7}


def order_msg(oid: int, req: int) -> str:
    """Every 4th message cancels the order sent 3 before; the others are new orders."""
    if oid % 4 == 3:
        return orjson.dumps({"type": "cancel", "req_id": req, "order_id": oid - 3, "symbol": (oid - 3) % 3}).decode()
    return orjson.dumps({"type": "new", "req_id": req, **new_order(oid)}).decode()


async def ws_client(url: str, headers, n_max: int, seconds: float, window: int, make, is_ack, lat: list,
                    rate: float | None = None) -> int:
    """Send up to n_max messages with at most `window` unacknowledged (or at `rate` per second);
    record send -> ack latency. Returns the number acknowledged."""
    from websockets.asyncio.client import connect

    async with connect(url, additional_headers=headers, max_size=1 << 26, compression=None) as ws:
        sent_at: dict = {}
        done = 0
        stop = time.monotonic() + seconds
        sem = asyncio.Semaphore(window)
        finished = asyncio.Event()
        sent_count = 0

        async def reader():
            nonlocal done
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue
                for line in raw.split("\n"):      # the gateway puts several messages in a frame
                    rid = is_ack(line)
                    if rid is not None and rid in sent_at:
                        lat.append(time.perf_counter_ns() - sent_at.pop(rid))
                        done += 1
                        sem.release()
                if not sent_at and (sent_count >= n_max or time.monotonic() >= stop):
                    finished.set()
                    return

        rt = asyncio.ensure_future(reader())
        t0 = time.monotonic()
        i = 0
        while i < n_max and time.monotonic() < stop:
            if rate:
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await sem.acquire()
            msg = make(i)
            sent_at[i] = time.perf_counter_ns()
            await ws.send(msg)
            i += 1
            sent_count = i
        if sent_at:
            try:
                await asyncio.wait_for(finished.wait(), 30)
            except asyncio.TimeoutError:
                pass
        rt.cancel()
        return done


def json_ack(raw: str):
    if raw.startswith('{"type":"ack"'):
        return orjson.loads(raw)["req_id"]
    return None


async def phase_ws(url, headers, clients, seconds, window, n_max, make_for, is_ack, rate=None):
    lat: list = []
    t = time.perf_counter()
    done = await asyncio.gather(*(ws_client(url, headers, n_max, seconds, window, make_for(c), is_ack, lat,
                                            rate / clients if rate else None) for c in range(clients)))
    el = time.perf_counter() - t
    return sum(done), el, lat


def arrow_frame(start: int, n: int) -> bytes:
    import pyarrow as pa

    oid = np.arange(start, start + n, dtype=np.uint64)
    side = np.where(oid & 1, 1, -1).astype(np.int8)
    off = ((oid * np.uint64(2654435761)) % np.uint64(16)).astype(np.int64)
    px = np.where(side == 1, 100_000 - off - 1, 100_000 + off + 1)
    px = np.where(off == 0, np.where(side == 1, 100_010, 99_990), px)
    t = pa.table({"ts_ns": np.zeros(n, np.int64), "order_id": oid, "side": side, "price_ticks": px,
                  "qty": (1 + oid % np.uint64(7)).astype(np.int64), "symbol": (oid % np.uint64(3)).astype(np.uint32)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    return sink.getvalue().to_pybytes()


async def md_subscriber(url: str, headers, first: str | None, counts: list, ready: asyncio.Event, n_ready: list,
                        want: int) -> None:
    """A market-data client that reads (and counts messages of) everything until cancelled."""
    from websockets.asyncio.client import connect

    async with connect(url, additional_headers=headers, max_size=1 << 26, compression=None) as ws:
        if first:
            await ws.send(first)
        n_ready[0] += 1
        if n_ready[0] == want:
            ready.set()
        try:
            async for raw in ws:
                counts[0] += raw.count("\n") + 1
                counts[1] += len(raw)
        except asyncio.CancelledError:
            pass


async def with_subscribers(kind: str, port: int, headers, n: int, run):
    """Run `run()` with n market-data subscribers of `kind` (native or binance) connected."""
    counts, n_ready, ready = [0, 0], [0], asyncio.Event()
    if kind == "native":
        url, first = f"ws://127.0.0.1:{port}/v1/ws/market", orjson.dumps({"type": "subscribe", "symbols": [0, 1, 2]}).decode()
    else:
        names = "/".join(f"{s}@{k}" for s in ("sym0", "sym1", "sym2") for k in ("depth@100ms", "trade"))
        url, first = f"ws://127.0.0.1:{port}/stream?streams={names}", None
    subs = [asyncio.ensure_future(md_subscriber(url, headers, first, counts, ready, n_ready, n)) for _ in range(n)]
    await asyncio.wait_for(ready.wait(), 60)
    await asyncio.sleep(0.2)
    c0 = list(counts)
    out = await run()
    await asyncio.sleep(0.5)                 # the last messages drain
    for t in subs:
        t.cancel()
    await asyncio.gather(*subs, return_exceptions=True)
    return out, counts[0] - c0[0], counts[1] - c0[1]


async def phase_rest(base, clients, seconds, n_max):
    import httpx

    lat: list = []
    stop = time.monotonic() + seconds

    async def one(c):
        n = 0
        async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": KEY}, timeout=30) as h:
            while n < n_max and time.monotonic() < stop:
                body = new_order(500_000_000 + c * 10_000_000 + n)
                t0 = time.perf_counter_ns()
                r = await h.post("/v1/orders", content=orjson.dumps(body))
                lat.append(time.perf_counter_ns() - t0)
                assert r.status_code == 200, r.text
                n += 1
        return n

    t = time.perf_counter()
    done = await asyncio.gather(*(one(c) for c in range(clients)))
    return sum(done), time.perf_counter() - t, lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each phase (bounded)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--window", type=int, default=64, help="messages in flight per WebSocket client")
    ap.add_argument("--frame-rows", type=int, default=10_000)
    ap.add_argument("--paced-rate", type=float, default=10_000)
    ap.add_argument("--fsync", default="batch", choices=("always", "batch", "interval"),
                    help="the gateway's durability policy (default: the server's default, batch)")
    ap.add_argument("--phases", default="echo,ws-json,ws-paced,arrow,rest,md-native,md-binance")
    ap.add_argument("--subscribers", type=int, default=8, help="market-data clients in md-native / md-binance")
    ap.add_argument("--max-messages", type=int, default=2_000_000, help="per client and phase")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--profile", type=Path, default=None,
                    help="run the gateway under cProfile and write its stats here (slows it down)")
    ap.add_argument("--echo-server", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.echo_server is not None:
        run_echo(a.echo_server)
        return
    tmp = Path(tempfile.mkdtemp(prefix="hpte-bench-server-"))
    cfg = tmp / "SERVER.toml"
    cfg.write_text(f'[server]\nsymbols = [0, 1, 2]\njournal_dir = "journal"\nfsync = "{a.fsync}"\n'
                   f'\n[[keys]]\nkey = "{KEY}"\naccount = 1\nrole = "trader"\n'
                   + "".join(f'\n[[binance.symbols]]\nname = "SYM{s}"\nsymbol = {s}\nbase = "B{s}"\nquote = "Q"\n'
                             f'tick_size = "0.01"\nlot_size = "0.001"\n' for s in range(3)))
    ep, gp = free_port(), free_port()
    procs = []
    try:
        echo = subprocess.Popen([sys.executable, __file__, "--echo-server", str(ep)])
        procs.append(echo)
        prof = ["-m", "cProfile", "-o", str(a.profile)] if a.profile else []
        gw = subprocess.Popen([sys.executable, *prof, "-m", "hpte", "serve", "--config", str(cfg), "--port", str(gp)],
                              stderr=subprocess.DEVNULL)
        procs.append(gw)
        wait_ready(f"http://127.0.0.1:{gp}/v1/health", gw)
        try:
            import httpx
            httpx.get(f"http://127.0.0.1:{ep}/", timeout=2)
        except Exception:
            pass
        time.sleep(0.5)
        hdr = {"X-API-Key": KEY}
        res = {}

        async def run_all():
            sample = order_msg(5, 5)
            # echo: the same-size messages; the "ack" is the echo itself
            def make_echo(c):
                return lambda i: sample[:-1] + f',"e":{c * 10_000_000 + i}}}'
            c0 = cpu_s(echo.pid)
            n, el, lat = await phase_ws(f"ws://127.0.0.1:{ep}/echo", None, a.clients, a.seconds, a.window,
                                        a.max_messages, make_echo,
                                        lambda raw: orjson.loads(raw)["e"] % 10_000_000 if raw else None)
            res["echo"] = {"msgs": n, "seconds": el, "per_s": n / el, **pct(lat),
                           "server_cpu_us": (cpu_s(echo.pid) - c0) / max(n, 1) * 1e6}

            ph = set(a.phases.split(","))
            mark = [cpu_us_sys(gw.pid)]

            def cpu(n):
                """The gateway's CPU per order since the last call (the phase just run), and the
                part of it spent in the kernel (socket I/O, fsync)."""
                u, k = cpu_us_sys(gw.pid)
                du, dk = u - mark[0][0], k - mark[0][1]
                mark[0] = (u, k)
                return {"server_cpu_us": (du + dk) / max(n, 1) * 1e6, "server_sys_share": dk / max(du + dk, 1e-9)}

            def make_order(c):
                return lambda i: order_msg(c * 10_000_000 + i, i)
            if "ws-json" in ph:
                n, el, lat = await phase_ws(f"ws://127.0.0.1:{gp}/v1/ws/orders", hdr, a.clients, a.seconds,
                                            a.window, a.max_messages, make_order, json_ack)
                res["ws-json"] = {"msgs": n, "seconds": el, "per_s": n / el, **pct(lat), **cpu(n)}

            def make_paced(c):
                return lambda i: order_msg(100_000_000 + c * 10_000_000 + i, i)
            if "ws-paced" in ph:
                n, el, lat = await phase_ws(f"ws://127.0.0.1:{gp}/v1/ws/orders", hdr, a.clients, a.seconds, 10_000,
                                            a.max_messages, make_paced, json_ack, rate=a.paced_rate)
                res["ws-paced"] = {"msgs": n, "seconds": el, "per_s": n / el, "target_per_s": a.paced_rate, **pct(lat),
                                   **cpu(n)}

            def make_frame(c):
                def mk(i):
                    return arrow_frame(200_000_000 + (c * 100_000 + i) * a.frame_rows, a.frame_rows)
                return mk
            if "arrow" in ph:
                n, el, lat = await phase_ws(f"ws://127.0.0.1:{gp}/v1/ws/orders", hdr, 1, a.seconds, 2,
                                            max(1, 20_000_000 // a.frame_rows), make_frame, json_ack)
                res["arrow"] = {"frames": n, "rows": n * a.frame_rows, "seconds": el,
                                "per_s": n * a.frame_rows / el, **pct(lat), **cpu(n * a.frame_rows)}
            if "rest" in ph:
                n, el, lat = await phase_rest(f"http://127.0.0.1:{gp}", a.clients, a.seconds, a.max_messages)
                res["rest"] = {"msgs": n, "seconds": el, "per_s": n / el, **pct(lat), **cpu(n)}
            for kind in ("native", "binance"):
                if f"md-{kind}" not in ph:
                    continue
                if "ws-json" not in res:
                    raise SystemExit("md-native / md-binance are measured against the ws-json phase: run it too")

                async def run(kind=kind):
                    cpu(0)                                 # the mark: after the subscribers connected
                    return await phase_ws(f"ws://127.0.0.1:{gp}/v1/ws/orders", hdr, a.clients, a.seconds,
                                          a.window, a.max_messages, make_order, json_ack)
                (n, el, lat), msgs, nbytes = await with_subscribers(kind, gp, hdr, a.subscribers, run)
                c = cpu(n)
                res[f"md-{kind}"] = {"msgs": n, "seconds": el, "per_s": n / el, **pct(lat), **c,
                                     "subscribers": a.subscribers, "md_msgs": msgs, "md_bytes": nbytes,
                                     "fanout_cpu_us_per_order_per_sub":
                                         (c["server_cpu_us"] - res["ws-json"]["server_cpu_us"]) / a.subscribers}

        asyncio.run(run_all())
    finally:
        for p in procs:
            if a.profile and p is procs[-1]:
                p.send_signal(signal.SIGINT)     # uvicorn re-raises it: cProfile writes on KeyboardInterrupt
            else:
                p.terminate()
            try:
                p.wait(60 if a.profile else 10)
            except subprocess.TimeoutExpired:
                p.kill()
    base = res["echo"]["per_s"]
    print(f"{'phase':<10} {'orders/s':>12} {'vs echo':>8} {'p50 us':>9} {'p99 us':>9} {'p99.9 us':>9} "
          f"{'srv cpu us/order':>17} {'vs echo':>8}")
    cbase = res["echo"]["server_cpu_us"]
    for k, v in res.items():
        f = lambda x: f"{x:9.0f}" if x is not None else f"{'-':>9}"
        print(f"{k:<10} {v['per_s']:12,.0f} {v['per_s'] / base:8.2f} {f(v['p50_us'])} {f(v['p99_us'])} {f(v['p999_us'])} "
              f"{v['server_cpu_us']:17.2f} {v['server_cpu_us'] / cbase:8.2f}")
    for k in ("md-native", "md-binance"):
        if k in res:
            v = res[k]
            print(f"{k}: {v['subscribers']} subscribers received {v['md_msgs']:,} messages ({v['md_bytes'] / 1e6:.1f} MB) "
                  f"for {v['msgs']:,} orders; fan-out cost {v['fanout_cpu_us_per_order_per_sub']:.2f} us of gateway CPU "
                  f"per order per subscriber")
    if "md-native" in res and "md-binance" in res:
        print(f"Binance streams / native market stream fan-out cost: "
              f"{res['md-binance']['fanout_cpu_us_per_order_per_sub'] / res['md-native']['fanout_cpu_us_per_order_per_sub']:.2f}x")
    shares = ", ".join(f"{k} {v['server_sys_share']:.0%}" for k, v in res.items() if "server_sys_share" in v)
    print(f"gateway CPU in the kernel (system time): {shares}")
    print(f"clients {a.clients}, window {a.window}, frame rows {a.frame_rows}, paced {a.paced_rate:,.0f}/s, "
          f"{a.seconds:g} s per phase; fsync={a.fsync}; cpu {os.cpu_count()}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
