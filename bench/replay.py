"""What replay protection costs a request: DescribeCollection (the cheapest operation that
writes a ledger event, so the one where the extra database write weighs most) through two
servers side by side, one with replay protection (every signature written to
fl_seen_signatures before the request is served) and one without, each on its own SQLite data
directory. Signed with a fresh nonce header each, as distinct requests are.

The two servers run at once and the modes alternate in rounds, so the drifting load of a
shared machine falls on both alike. Prints req/s, p50 and p99 per mode and client count, the
ratio to no protection, and the load average before and after.

    python bench/replay.py --requests 400 --rounds 4 --clients 1 4
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and bench/http.py would shadow
# the standard library's `http` package (which httpx imports): drop the folder.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import os
import secrets
import tempfile
import threading
import time
import uuid

import httpx
import numpy as np
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from faceledger.server import RekognitionApp, running
from faceledger.server.keys import IssuedKey, KeyStore
from faceledger.service import FaceService
from faceledger.settings import Settings

BODY = b'{"CollectionId": "bench"}'


def signed(url: str, key: IssuedKey) -> dict[str, str]:
    request = AWSRequest(method="POST", url=url + "/", data=BODY, headers={
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "RekognitionService.DescribeCollection",
        "x-nonce": uuid.uuid4().hex})
    SigV4Auth(Credentials(key.info.access_key_id, key.secret_access_key), "rekognition",
              "us-east-1").add_auth(request)
    return dict(request.headers.items())


def hammer(url: str, key: IssuedKey, requests: int, clients: int) -> tuple[list[float], float]:
    """`requests` calls over `clients` threads; (latencies, wall seconds)."""
    latencies: list[float] = []
    lock = threading.Lock()
    left = iter(range(requests))

    def worker() -> None:
        with httpx.Client(timeout=60) as http:
            while True:
                with lock:
                    if next(left, None) is None:
                        return
                t0 = time.perf_counter()
                answer = http.post(url + "/", content=BODY, headers=signed(url, key))
                assert answer.status_code == 200, answer.text
                with lock:
                    latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=400, help="per mode and client count")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    args = ap.parse_args()
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="faceledger-bench-replay-"))
    apps: dict[str, tuple[RekognitionApp, IssuedKey]] = {}
    for mode, on in (("replay protection", True), ("no protection", False)):
        settings = Settings(data_dir=tmp / mode.replace(" ", "-"), server_workers=1,
                            replay_protection=on)
        service = FaceService(settings)
        service.create_collection("bench")
        store = KeyStore(service.engine, secrets.token_bytes(32))
        key = store.create("bench", ["*"], ["*"])
        apps[mode] = RekognitionApp(service, store, settings, warm_up=False), key
    results: dict[tuple[str, int], tuple[list[float], float]] = {}
    with running(apps["replay protection"][0]) as on_url, \
            running(apps["no protection"][0]) as off_url:
        urls = {"replay protection": on_url, "no protection": off_url}
        for mode in urls:  # warm: connections, first statements
            hammer(urls[mode], apps[mode][1], 20, 1)
        per_round = max(1, args.requests // args.rounds)
        for clients in args.clients:
            order = list(urls)
            for r in range(args.rounds):
                for mode in (order if r % 2 == 0 else order[::-1]):
                    lat, wall = hammer(urls[mode], apps[mode][1], per_round, clients)
                    done = results.setdefault((mode, clients), ([], 0.0))
                    results[(mode, clients)] = (done[0] + lat, done[1] + wall)
    for app, _ in apps.values():
        app.close()
        app.service.close()
    load_after = os.getloadavg()
    print(f"DescribeCollection over HTTP, {args.requests} requests per row in {args.rounds} "
          f"alternating rounds, SQLite (synchronous=FULL), {os.cpu_count()} CPUs")
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(f"{'mode':<20} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'req/s x off':>11}")
    for (mode, clients), (lat, wall) in results.items():
        base_lat, base_wall = results[("no protection", clients)]
        rate, base = len(lat) / wall, len(base_lat) / base_wall
        print(f"{mode:<20} {clients:>7} {rate:>8.1f} {np.percentile(lat, 50) * 1000:>8.2f} "
              f"{np.percentile(lat, 99) * 1000:>8.2f} {rate / base:>11.2f}")


if __name__ == "__main__":
    main()
