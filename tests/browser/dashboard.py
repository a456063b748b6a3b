#!/usr/bin/env python3
"""End-to-end check of the admin dashboard and the API docs page in headless Chromium (Debian's chromium,
chromium-driver and python3-selenium), against a running `tideway demo`.

    dashboard.py --admin http://127.0.0.1:9901 --base http://127.0.0.1:8080 --screenshot out.png

Loads /dashboard, checks that it shows the demo's three services, applies load to the gateway
(a bounded number of requests, on loopback), checks that the page's numbers move (requests
answered, request rate, per-route rows, memory chart points), saves a screenshot, then checks
that /docs renders the demo's operations on both listeners.

Exit codes: 0 passed, 1 a check failed, 3 the browser could not be started (the Rust test that
calls this decides whether that is a failure: it is when CI=true).
"""

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.request

SERVICES = ["logistics.Waybills", "logistics.Tracking", "logistics.Pricing"]
# Load: at most this many requests, for at most LOAD_SECONDS.
LOAD_REQUESTS = 1500
LOAD_SECONDS = 12.0
LOAD_THREADS = 4


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        print(f"BROWSER UNAVAILABLE: selenium is not importable: {e}", file=sys.stderr)
        sys.exit(3)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1280,1700", "--no-first-run",
                "--disable-extensions", "--disable-background-networking"]:
        options.add_argument(arg)
    try:
        return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    except Exception as e:  # noqa: BLE001 - any failure to start is "no browser"
        print(f"BROWSER UNAVAILABLE: cannot start headless Chromium: {e}", file=sys.stderr)
        sys.exit(3)


def request(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code
    except OSError:
        return None


def apply_load(base, stats):
    """Bounded mixed load: reads, writes, quotes, and some 404s and 400s."""
    quote = {"weight_grams": 2000, "from_zone": 1, "to_zone": 4, "service_level": "standard"}
    waybill = {"sender": {"name": "Harbour Books", "address": "1 Quay St", "zone": 1},
               "recipient": {"name": "Ada", "address": "12 Hill Rd", "zone": 3},
               "weight_grams": 1250, "service_level": "express"}
    deadline = time.monotonic() + LOAD_SECONDS
    lock = threading.Lock()
    counter = iter(range(LOAD_REQUESTS))

    def worker():
        while time.monotonic() < deadline:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            kind = n % 5
            if kind == 0:
                status = request("POST", f"{base}/api/waybills", waybill)
            elif kind == 1:
                status = request("GET", f"{base}/api/waybills?limit=5")
            elif kind == 2:
                status = request("POST", f"{base}/api/quotes", quote)
            elif kind == 3:
                status = request("GET", f"{base}/api/waybills/WB-none-{n}")  # 404
            else:
                status = request("POST", f"{base}/api/quotes", {"weight_grams": 0})  # 400
            with lock:
                stats[status] = stats.get(status, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(LOAD_THREADS)]
    for t in threads:
        t.start()
    return threads


def wait_until(what, check, timeout):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - stale elements while the page redraws
            last = e
        time.sleep(0.25)
    fail(f"{what} (last seen: {last!r})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--admin", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--screenshot", required=True)
    args = ap.parse_args()

    from_page = browser()
    try:
        run(from_page, args)
    finally:
        from_page.quit()


def run(driver, args):
    from selenium.webdriver.common.by import By

    driver.set_page_load_timeout(20)
    driver.get(f"{args.admin}/dashboard?interval=1000")

    def value(elem_id):
        return float(driver.find_element(By.ID, elem_id).get_attribute("data-value") or 0)

    def updates():
        return int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-updates") or 0)

    wait_until("the dashboard never updated", lambda: updates() >= 2, 20)
    status = driver.find_element(By.ID, "status").text
    if "cannot" in status or "token" in status:
        fail(f"dashboard status: {status}")

    def services_shown():
        text = driver.find_element(By.ID, "services").text
        return all(s in text for s in SERVICES) and text
    text = wait_until("the services table does not list the demo's services", services_shown, 15)
    print(f"services shown: {[s for s in SERVICES if s in text]}")
    healthy = len(driver.find_elements(By.CSS_SELECTOR, "#services .pill.ok"))
    if healthy < len(SERVICES):
        fail(f"expected healthy instances and closed breakers, saw {healthy} green pills")

    before = value("total-requests")
    print(f"requests answered before load: {before:.0f}")
    stats = {}
    threads = apply_load(args.base, stats)

    # While the load runs, the rate shown must go above zero.
    rate = wait_until("the request rate never rose above 0 under load",
                      lambda: value("total-rate") > 1 and value("total-rate"), 15)
    print(f"request rate shown under load: {rate:.1f}/s")

    def route_row_rate():
        rows = driver.find_elements(By.CSS_SELECTOR, '#routes tr[data-route="POST /api/quotes"] td[data-field="rate"]')
        return rows and float(rows[0].get_attribute("data-value") or 0) > 0 and rows[0].text
    shown = wait_until("the POST /api/quotes row shows no rate", route_row_rate, 10)
    print(f"POST /api/quotes rate cell: {shown}/s")

    client_errors = wait_until("4xx rate never rose above 0",
                               lambda: value("client-error-rate") > 0 and value("client-error-rate"), 10)
    print(f"4xx rate shown under load: {client_errors:.2f}/s")

    # A screenshot while the load is on, so the picture shows traffic.
    time.sleep(1.5)
    driver.save_screenshot(args.screenshot)
    print(f"screenshot: {args.screenshot}")

    for t in threads:
        t.join(timeout=LOAD_SECONDS + 10)
    sent = sum(stats.values())
    print(f"load: {sent} requests, by status {dict(sorted(stats.items(), key=str))}")
    if stats.get(None):
        fail(f"{stats[None]} requests got no answer")

    after = wait_until("requests answered did not grow by the load sent",
                       lambda: value("total-requests") >= before + sent and value("total-requests"), 10)
    print(f"requests answered after load: {after:.0f} (+{after - before:.0f})")

    points = wait_until("the memory chart has no points",
                        lambda: int(driver.find_element(By.ID, "memory-chart").get_attribute("data-points") or 0), 10)
    print(f"memory chart points: {points}")
    if int(driver.find_element(By.ID, "rate-chart").get_attribute("data-points") or 0) < 2:
        fail("the traffic chart has fewer than 2 points")

    # After the load, the rate falls back to 0.
    wait_until("the request rate did not fall back after the load",
               lambda: value("total-rate") < rate / 4 or None, 10)

    # The API docs page renders the document, on the public listener and on the admin one.
    for base in (args.base, args.admin):
        driver.get(f"{base}/docs")
        ops = wait_until(f"{base}/docs rendered no operations",
                         lambda: int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-operations") or 0), 15)
        text = driver.find_element(By.ID, "ops").text
        for path in ["/api/waybills/{id}", "/api/quotes"]:
            if path not in text:
                fail(f"{base}/docs does not show {path}")
        print(f"{base}/docs: {ops} operations shown")
    if ops != 6:
        fail(f"the demo has 6 operations, /docs shows {ops}")
    print("PASS")


if __name__ == "__main__":
    main()
