"""Load test of ``drustage serve``: N concurrent clients upload phantoms on loopback for a bounded time.

    python bench/bench_service.py --model runs/demo/bundle [--clients 8] [--seconds 60]

Starts the server as its own process (as a site would run it), waits for /healthz, then each
client posts radiographs back to back. Prints p50/p95 latency, throughput and errors; any
non-201 answer or transport failure counts as an error.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2
from _table import print_table


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(base: str, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"server exited with status {server.returncode}")
        try:
            if httpx2.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx2.TransportError:
            time.sleep(0.5)
    sys.exit("server did not become healthy")


def main() -> None:
    from drustage.synth.writer import SynthConfig, generate_dataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="bundle directory or .zip")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--slots", type=int, default=1, help="server --slots")
    parser.add_argument("--runtime", default="torch", help="server --runtime")
    args = parser.parse_args()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as folder:
        generate_dataset(folder, SynthConfig(count=8, seed=91), workers=2, progress=False)
        payloads = [p.read_bytes() for p in sorted(Path(folder, "images").glob("*.png"))]
        server = subprocess.Popen([sys.executable, "-m", "drustage.cli", "serve", "--model", args.model, "--port",
                                   str(port), "--slots", str(args.slots), "--runtime", args.runtime, "--quiet"])
        try:
            _wait_healthy(base, server)
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()
            stop = time.monotonic() + args.seconds

            def client(index: int) -> None:
                with httpx2.Client(base_url=base, timeout=120) as http:
                    k = index
                    while time.monotonic() < stop:
                        start = time.perf_counter()
                        try:
                            payload = payloads[k % len(payloads)]
                            response = http.post("/v1/predictions", files={"file": ("x.png", payload)})
                            failure = None if response.status_code == 201 else f"HTTP {response.status_code}"
                        except httpx2.HTTPError as error:
                            failure = type(error).__name__
                        elapsed = time.perf_counter() - start
                        with lock:
                            (errors.append(failure) if failure else latencies.append(elapsed))
                        k += 1

            started = time.perf_counter()
            threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(timeout=30)
    quantiles = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else [float("nan")] * 19
    print_table(("clients", "slots", "runtime", "requests", "errors", "p50 ms", "p95 ms", "radiographs/s"), [(
        str(args.clients), str(args.slots), args.runtime, str(len(latencies) + len(errors)), str(len(errors)),
        f"{statistics.median(latencies) * 1000:.0f}" if latencies else "-", f"{quantiles[18] * 1000:.0f}",
        f"{len(latencies) / wall:.2f}")])
    if errors:
        print("errors:", ", ".join(sorted(set(errors))))


if __name__ == "__main__":
    main()
