"""Console benchmark: the day list and the patient search over 10,000 synthetic records, through the real server.

    python bench/bench_console.py            # ~1 min on 2 cores; --photos 10000 --repeats 30

Two record sets of the same size: a clinic's spread (50 days, ~200 photographs a day) and the worst case (every
photograph on one day: the day list groups all of them, and shows the first 100 visits). Each set is served by
``python -m device console`` in its own process (waitress, 4 threads); the client logs in and times each page
over HTTP on localhost (median and 95th percentile of ``--repeats`` requests, after one warm-up each), then reads
the server's resident memory (RSS) with psutil. Ratios are to the login page (no database) measured in the same
run, so a busy machine shifts every row alike.
"""

from __future__ import annotations

import argparse
import http.client
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device.console.auth import Credentials
from device.console.store import RecordReader
from device.console.synthetic import fill_records

USER, PASSWORD = "bench", "bench-123456"
PHOTOS_PER_VISIT = 2.2  # both eyes plus about one retake in ten eyes (device.console.synthetic)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """A logged-in HTTP client (cookie kept by hand: http.client only)."""

    def __init__(self, port: int) -> None:
        self.port, self.cookie = port, ""

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, bytes, float]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Cookie": self.cookie}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        t = time.perf_counter()
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        data = response.read()
        elapsed = (time.perf_counter() - t) * 1000
        cookie = response.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        conn.close()
        return response.status, data, elapsed

    def login(self) -> None:
        _, page, _ = self.request("GET", "/login")
        token = re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()
        status, _, _ = self.request("POST", "/login", urlencode({"user": USER, "password": PASSWORD,
                                                                 "csrf_token": token, "next": "/"}))
        if status != 303:
            raise SystemExit(f"bench: login failed ({status})")


def _wait(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"bench: the console exited: {process.stdout.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("bench: the console did not start")


def measure(records: Path, day: str, pid: str, repeats: int) -> tuple[dict, float, float]:
    """Serve ``records`` and time the pages; returns ({name: (median, p95, status)}, RSS after start, after, MiB)."""
    port = _port()
    process = subprocess.Popen([sys.executable, "-m", "device", "console", "--records", str(records), "--port",
                                str(port)], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        _wait(port, process)
        rss_start = psutil.Process(process.pid).memory_info().rss / 2 ** 20
        client = Client(port)
        client.login()
        pages = {"login page (no database)": "/login", "day list": f"/?day={day}",
                 "day list, referable only": f"/?day={day}&verdict=referable",
                 "search 'P0123' (id contains)": "/search?q=P0123", "search 'P' (200 matches)": "/search?q=P",
                 "patient page": f"/patient/{pid}", "CSV export of the day": f"/export/screenings.csv?from={day}"}
        out = {}
        for name, path in pages.items():
            client.request("GET", path)  # warm-up
            times, status = [], 0
            for _ in range(repeats):
                status, _, ms = client.request("GET", path)
                times.append(ms)
            times.sort()
            out[name] = (statistics.median(times), times[int(0.95 * (len(times) - 1))], status)
        rss_end = psutil.Process(process.pid).memory_info().rss / 2 ** 20
    finally:
        process.terminate()
        process.wait(10)
    return out, rss_start, rss_end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=10_000, help="synthetic photographs per record set")
    parser.add_argument("--repeats", type=int, default=30, help="timed requests per page")
    args = parser.parse_args()
    visits = int(args.photos / PHOTOS_PER_VISIT) + 1
    with tempfile.TemporaryDirectory(prefix="bench_console_") as tmp:
        for label, days in (("spread over 50 days", 50), ("all on one day (worst case)", 1)):
            records = Path(tmp) / f"records_{days}"
            t = time.perf_counter()
            info = fill_records(records, visits=visits, days=days)
            Credentials.for_records(records).set_password(USER, PASSWORD)
            with RecordReader(records) as r:
                total = r.count()
                last = r.between("0", "9")[-1]
            day = str(info["first_day"] + timedelta(days=days - 1))  # the last day: today
            print(f"\n{total} photographs ({visits} visits) {label}; made in {time.perf_counter() - t:.1f} s")
            results, rss0, rss1 = measure(records, day, last["patient_id"], args.repeats)
            base = results["login page (no database)"][0]
            print("| page | median ms | p95 ms | x login page | status |\n|---|---:|---:|---:|---|")
            for name, (med, p95, status) in results.items():
                print(f"| {name} | {med:.1f} | {p95:.1f} | {med / base:.1f} | {status} |")
            print(f"server RSS: {rss0:.0f} MiB after start, {rss1:.0f} MiB after the runs")


if __name__ == "__main__":
    main()
