"""STUN Binding throughput and round-trip time on loopback, closed loop.

Starts `manage.py runstun` (one process, the figure the README reports) on
a free port, and coturn (`turnserver`, Debian package coturn) beside it if
it is installed, and drives each with the same loader: `--loaders`
processes, each with one UDP socket and `--window` requests in flight.
Every response is checked: success class, a transaction id we sent and
have not seen answered, and an XOR-MAPPED-ADDRESS equal to the loader
socket's own address (RFC 8489 §14.2). A request unanswered for 0.5 s is
counted lost and sent again.

    python bench/stun.py [--seconds 5] [--loaders 1] [--window 64] [--no-coturn]
    python bench/stun.py --target udp:127.0.0.1:3478   # an already running server
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COOKIE = b"\x21\x12\xa4\x42"
TARGET_RPS = 60_000


def free_port() -> int:
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def expected_xor_mapped(addr: tuple[str, int]) -> bytes:
    """The XOR-MAPPED-ADDRESS attribute a correct server sends to `addr` (IPv4)."""
    xport = addr[1] ^ 0x2112
    xaddr = bytes(a ^ b for a, b in zip(socket.inet_aton(addr[0]), COOKIE, strict=True))
    return b"\x00\x20\x00\x08\x00\x01" + struct.pack("!H", xport) + xaddr


def loader(server: tuple[str, int], window: int, seconds: float, warmup: float, seed: int, out):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.connect(server)
    sock.settimeout(0.05)
    want = expected_xor_mapped(sock.getsockname())
    head = b"\x00\x01\x00\x00" + COOKIE
    counter = seed << 64
    pending: dict[bytes, float] = {}
    clock = time.perf_counter
    send, recv = sock.send, sock.recv
    for _ in range(window):
        counter += 1
        tid = counter.to_bytes(12, "big")
        pending[tid] = clock()
        send(head + tid)
    start = clock()
    measure_from = start + warmup
    end = measure_from + seconds
    ok = bad = lost = 0
    rtts: list[float] = []
    now = start
    while now < end:
        try:
            data = recv(2048)
        except TimeoutError:
            now = clock()
            for tid, sent in list(pending.items()):
                if now - sent > 0.5:
                    del pending[tid]
                    lost += now >= measure_from
                    counter += 1
                    fresh = counter.to_bytes(12, "big")
                    pending[fresh] = now
                    send(head + fresh)
            continue
        now = clock()
        sent = pending.pop(data[8:20], None)
        if sent is None or data[:2] != b"\x01\x01" or want not in data:
            bad += 1
            if sent is None:
                continue
        elif now >= measure_from:
            ok += 1
            rtts.append(now - sent)
        counter += 1
        tid = counter.to_bytes(12, "big")
        pending[tid] = now
        send(head + tid)
    out.put((ok, bad, lost, rtts[:: max(1, len(rtts) // 20000)]))


def drive(server, loaders: int, window: int, seconds: float, warmup: float = 1.0) -> dict:
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    procs = [
        context.Process(target=loader, args=(server, window, seconds, warmup, i + 1, out))
        for i in range(loaders)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=seconds + warmup + 30) for _ in procs]
    for proc in procs:
        proc.join()
    ok = sum(r[0] for r in results)
    rtts = sorted(x for r in results for x in r[3])
    return {
        "rps": ok / seconds,
        "ok": ok,
        "bad": sum(r[1] for r in results),
        "lost": sum(r[2] for r in results),
        "p50_ms": rtts[len(rtts) // 2] * 1000 if rtts else float("nan"),
        "p99_ms": rtts[int(len(rtts) * 0.99)] * 1000 if rtts else float("nan"),
    }


def wait_udp(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.settimeout(0.2)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError("server exited early")
            probe.sendto(b"\x00\x01\x00\x00" + COOKIE + os.urandom(12), ("127.0.0.1", port))
            try:
                probe.recv(2048)
                return
            except TimeoutError:
                continue
        raise RuntimeError(f"no STUN answer on {port}")
    finally:
        probe.close()


def start_runstun(data_dir: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, XMPP_DATA_DIR=data_dir, XMPP_LOG_LEVEL="WARNING")
    env.setdefault("DJANGO_SETTINGS_MODULE", "imserver.settings")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runstun", "--host", "127.0.0.1", "--port", str(port),
         "--tls-port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_udp(port, process)
    return process, port


def start_coturn(data_dir: str) -> tuple[subprocess.Popen, int] | None:
    binary = shutil.which("turnserver")
    if binary is None:
        return None
    port = free_port()
    process = subprocess.Popen(
        [binary, "-n", "--stun-only", "--no-cli", "--no-tls", "--no-dtls", "--no-tcp",
         "--listening-ip", "127.0.0.1", "--listening-port", str(port),
         "--log-file", os.path.join(data_dir, "coturn.log"), "--pidfile",
         os.path.join(data_dir, "coturn.pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_udp(port, process)
    return process, port


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def report(name: str, figures: dict) -> None:
    print(
        f"{name:<10} {figures['rps']:>10,.0f} responses/s   p50 {figures['p50_ms']:.2f} ms   "
        f"p99 {figures['p99_ms']:.2f} ms   bad {figures['bad']}   lost {figures['lost']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--loaders", type=int, default=1, help="loader processes")
    parser.add_argument("--window", type=int, default=64, help="requests in flight per loader")
    parser.add_argument("--no-coturn", action="store_true")
    parser.add_argument("--target", help="udp:HOST:PORT of a running server instead of runstun")
    args = parser.parse_args()
    print(
        f"closed loop, {args.loaders} loader process(es) x {args.window} in flight, "
        f"{args.seconds:.0f} s measured on {os.cpu_count()} cores (shared with the loader)"
    )
    ok = True
    with tempfile.TemporaryDirectory() as data_dir:
        if args.target:
            _, host, port = args.target.split(":")
            ours = drive((host, int(port)), args.loaders, args.window, args.seconds)
            report("target", ours)
        else:
            process, port = start_runstun(data_dir)
            try:
                ours = drive(("127.0.0.1", port), args.loaders, args.window, args.seconds)
            finally:
                stop(process)
            report("runstun", ours)
        coturn = None if args.no_coturn else start_coturn(data_dir)
        if coturn is not None:
            process, port = coturn
            try:
                theirs = drive(("127.0.0.1", port), args.loaders, args.window, args.seconds)
            finally:
                stop(process)
            report("coturn", theirs)
            print(f"ratio to coturn in this run: {ours['rps'] / theirs['rps']:.2f}")
        elif not args.no_coturn:
            print("coturn: not installed (apt-get install coturn), no ratio")
    verdict = "met" if ours["rps"] >= TARGET_RPS and not ours["bad"] else "MISSED"
    ok = verdict == "met"
    print(
        f"target >= {TARGET_RPS:,} responses/s from one process, every response checked: {verdict}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
