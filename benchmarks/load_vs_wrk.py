"""`prefork load` beside wrk on the same servers (issue 23): a fast hello, a fixed 20 ms delay,
and a server that stalls 1 s every 5 s. One table, measured in one run:

    python benchmarks/load_vs_wrk.py [-d SECONDS] [-c CONNECTIONS]

The servers are one asyncio process each on 127.0.0.1 (``serve`` below); each generator gets
one thread/worker (wrk -t1, prefork load -w1) and the same connections and duration. wrk's
latencies are its corrected ones (wrk 4 corrects its closed loop); prefork load prints both.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import time

SERVER = r"""
import asyncio, sys, time
mode, port = sys.argv[1], int(sys.argv[2])
start = time.monotonic()
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

async def hold():
    if mode == "delay":
        await asyncio.sleep(0.02)
    elif mode == "stall":
        phase = (time.monotonic() - start) % 5.0
        if phase >= 4.0:  # the last second of every five
            await asyncio.sleep(5.0 - phase)

async def conn(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if mode != "hello":
                await hold()
            writer.write(OK)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(conn, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wrk(url: str, c: int, d: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{c}", f"-d{d}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=d + 30,
    ).stdout
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def ms(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m[1]) * unit[m[2]] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {"rps": float(rps[1]) if rps else 0.0, "p50": ms("50"), "p99": ms("99")}


def prefork_load(url: str, c: int, d: int, *extra: str) -> dict[str, float]:
    argv = [sys.executable, "-m", "prefork", "load", url, f"-c{c}", f"-d{d}s", "-w1", "--json"]
    done = subprocess.run([*argv, *extra], capture_output=True, text=True, timeout=d + 60)
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    corrected = doc.get("latency_corrected_ms", doc["latency_ms"])
    return {
        "rps": doc["rps"],
        "p50": doc["latency_ms"]["p50"],
        "p99": doc["latency_ms"]["p99"],
        "p99_corrected": corrected["p99"],
        "unanswered": doc["unanswered"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-d", type=int, default=10)
    parser.add_argument("-c", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    rows = []
    for mode in ("hello", "delay", "stall"):
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, mode, str(port)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            url = f"http://127.0.0.1:{port}/"
            w = wrk(url, args.c, args.d)
            time.sleep(0.5)
            p = prefork_load(url, args.c, args.d)
            rows.append((mode, w, p))
        finally:
            server.terminate()
            server.wait()
    print(
        f"| server | wrk -t1 req/s | wrk p50 | wrk p99 (corrected) | prefork load -w1 req/s "
        f"| p50 | p99 measured | p99 corrected | unanswered |  (-c {args.c}, -d {args.d}s)"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, w, p in rows:
        print(
            f"| {mode} | {w['rps']:,.0f} | {w['p50']:.2f} ms | {w['p99']:.2f} ms | "
            f"{p['rps']:,.0f} | {p['p50']:.2f} ms | {p['p99']:.2f} ms | "
            f"{p['p99_corrected']:.2f} ms | {p['unanswered']} |"
        )


if __name__ == "__main__":
    main()
