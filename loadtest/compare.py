#!/usr/bin/env python3
"""Side-by-side load comparison of Rookery, Prosody and ejabberd.

One run: builds Rookery and the load generator (release), installs Prosody
and ejabberd from Debian if missing, starts all three with their own configs
in one temp dir (loadtest/peers.py: same domain, same ECDSA P-256
certificate, SCRAM-SHA-1 with 4096 iterations, SQLite storage, MAM on for
everyone, no rate limits), registers the same accounts on each by in-band
registration, runs the same scenarios against each with `rookery-load`,
stops them, and prints every figure side by side with the ratio of Rookery
to the better peer. Loopback only; every scenario is bounded in count and
time; the default sizes finish in about 13 minutes on a 2-core machine
(muc-fanout alone: about 7).

    python3 loadtest/compare.py                 # default sizes
    python3 loadtest/compare.py --quick         # small sizes, a smoke run
    python3 loadtest/compare.py --servers rookery,prosody --out results.jsonl

Scenarios (sizes are options), in this order against each server:
  idle       --users connections held --idle-seconds; server KiB/connection
             (first, while the server's allocator holds no freed memory)
  login      --users accounts log in (STARTTLS, SCRAM-SHA-1, bind, roster,
             initial presence), 100 in flight
  msg-rate   the same accounts as pairs, --msg-rate messages/s in all for
             --msg-seconds; end-to-end latency
  msg-max    --sat-users accounts as pairs, closed loop with 2 messages in
             flight per direction: delivered messages/s at saturation
  presence   --presence-users accounts with --contacts contacts each (rosters
             made by subscription handshakes first, not measured): everyone
             logs in until all contacts are seen, then changes presence once
  muc-fanout --fanout-users accounts join one room on conference.load.test
             (n^2 presences: the join phase is timed), then --fanout-senders
             of them send groupchat messages at --fanout-rate msg/s in all for
             --fanout-seconds: delivered copies/s, latency, lost copies

--scenarios picks some of them (comma-separated, e.g. --scenarios muc-fanout);
the registrations they need run first.

The JSON line of every run goes to --out (one per server and scenario).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import peers  # noqa: E402

# (scenario, figure path, label, higher is better?)
ROWS = [
    ("login", "figures.logins", "logins completed", None),
    ("login", "figures.logins_per_s", "logins/s", True),
    ("login", "figures.server_cpu_ms_per_login", "server CPU ms per login", False),
    ("login", "latency.login.p50_ms", "login latency p50 ms", False),
    ("login", "latency.login.p99_ms", "login latency p99 ms", False),
    ("login", "server_peak_rss_kib", "server peak RSS KiB", False),
    ("login", "figures.generator_cpu_ms_per_login", "generator CPU ms per login", None),
    ("msg-rate", "figures.delivered_per_s", "delivered msg/s", True),
    ("msg-rate", "figures.lost", "lost messages", False),
    ("msg-rate", "latency.message.p50_ms", "latency p50 ms", False),
    ("msg-rate", "latency.message.p90_ms", "latency p90 ms", False),
    ("msg-rate", "latency.message.p99_ms", "latency p99 ms", False),
    ("msg-rate", "latency.message.max_ms", "latency max ms", False),
    ("msg-rate", "figures.server_cpu_us_per_message", "server CPU us per msg", False),
    ("msg-max", "figures.delivered_per_s", "delivered msg/s (saturation)", True),
    ("msg-max", "figures.lost", "lost messages", False),
    ("msg-max", "latency.message.p99_ms", "latency p99 ms", False),
    ("msg-max", "figures.server_cpu_us_per_message", "server CPU us per msg", False),
    ("msg-max", "generator_cpu_s", "generator CPU s", None),
    ("presence", "figures.all_contacts_seen_s", "s until all contacts seen", False),
    ("presence", "figures.login_presence_per_s", "presences/s during login", True),
    ("presence", "figures.change_per_s", "presence changes delivered/s", True),
    ("presence", "latency.change.p99_ms", "change latency p99 ms", False),
    ("presence", "server_cpu_s", "server CPU s", False),
    ("muc-fanout", "figures.occupants", "occupants joined", None),
    ("muc-fanout", "figures.join_s", "s until all saw all (join)", False),
    ("muc-fanout", "figures.join_presences_per_s", "presences/s during join", True),
    ("muc-fanout", "latency.join.p50_ms", "join latency p50 ms", False),
    ("muc-fanout", "latency.join.p99_ms", "join latency p99 ms", False),
    ("muc-fanout", "figures.join_server_cpu_s", "server CPU s (join)", False),
    ("muc-fanout", "figures.sent", "groupchat messages sent", None),
    ("muc-fanout", "figures.delivered_per_s", "delivered copies/s", True),
    ("muc-fanout", "figures.lost_copies", "lost copies", False),
    ("muc-fanout", "latency.message.p50_ms", "latency p50 ms", False),
    ("muc-fanout", "latency.message.p90_ms", "latency p90 ms", False),
    ("muc-fanout", "latency.message.p99_ms", "latency p99 ms", False),
    ("muc-fanout", "latency.message.max_ms", "latency max ms", False),
    ("muc-fanout", "figures.server_cpu_us_per_copy", "server CPU us per copy", False),
    ("muc-fanout", "server_peak_rss_kib", "server peak RSS KiB", False),
    ("muc-fanout", "generator_cpu_s", "generator CPU s (fan-out)", None),
    ("idle", "figures.connections", "connections", None),
    ("idle", "figures.alive_after_hold", "alive after hold", None),
    ("idle", "figures.server_kib_per_connection", "server KiB per connection", False),
    ("idle", "figures.generator_kib_per_connection", "generator KiB per connection", None),
]


def get(report: dict | None, path: str):
    cur = report
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}" if v else "0"
    return str(v)


def run_load(binary: str, scenario: str, srv, args, extra: list[str]) -> dict:
    cmd = [binary, scenario, "--addr", f"127.0.0.1:{srv.port}", "--domain", peers.DOMAIN,
           "--mech", "SCRAM-SHA-1", "--tls", "starttls", "--server-pid", str(srv.pid()),
           "--label", srv.name, "--threads", str(args.threads), "--json",
           # Salted passwords are kept between runs, as clients keep them:
           # the first scenario pays PBKDF2 once per account, later login
           # storms measure the server, not the generator's hashing.
           "--salt-cache", os.path.join(args.salt_dir, f"salts-{srv.name}.json"), *extra]
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.scenario_timeout)
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{srv.name} {scenario}: no report (exit {p.returncode}): "
                           f"{p.stderr.strip()[-500:]}")
    report = json.loads(lines[-1])
    report["wall_s"] = round(time.monotonic() - t0, 2)
    if report.get("errors"):
        print(f"  {srv.name} {scenario}: {report['errors']} errors, e.g. "
              f"{report.get('error_samples', [])[:2]}", file=sys.stderr)
    return report


def scenarios(args) -> list[tuple[str, str, list[str]]]:
    u = str(args.users)
    # Idle runs first, on a server that has held no connections yet:
    # allocators keep freed memory, so a later run would measure reuse.
    return [
        ("register", "register", ["--users", u, "--concurrency", "50"]),
        ("register-presence", "register", ["--users", str(args.presence_users),
                                           "--prefix", "pres", "--concurrency", "50"]),
        ("idle", "idle", ["--users", u, "--duration", str(args.idle_seconds)]),
        ("login", "login", ["--users", u, "--concurrency", "100"]),
        ("msg-rate", "messaging", ["--users", u, "--rate", str(args.msg_rate),
                                   "--duration", str(args.msg_seconds), "--timeout", "60"]),
        ("msg-max", "messaging", ["--users", str(args.sat_users), "--rate", "0",
                                  "--window", "2", "--duration", str(args.msg_seconds),
                                  "--timeout", "60"]),
        ("presence", "presence", ["--users", str(args.presence_users), "--contacts",
                                  str(args.contacts), "--prefix", "pres", "--timeout", "180"]),
        ("register-fanout", "register", ["--users", str(args.fanout_users),
                                         "--prefix", "muc", "--concurrency", "50"]),
        ("muc-fanout", "muc-fanout", ["--users", str(args.fanout_users), "--prefix", "muc",
                                      "--senders", str(args.fanout_senders),
                                      "--rate", str(args.fanout_rate),
                                      "--duration", str(args.fanout_seconds),
                                      "--concurrency", "100", "--timeout", "150"]),
    ]


# What each scenario needs registered first.
NEEDS = {"idle": "register", "login": "register", "msg-rate": "register",
         "msg-max": "register", "presence": "register-presence",
         "muc-fanout": "register-fanout"}


def selected(args) -> list[tuple[str, str, list[str]]]:
    """The scenarios of --scenarios (all by default) and the registrations
    they need, in the order of scenarios()."""
    allv = scenarios(args)
    if not args.scenarios:
        return allv
    want = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    unknown = want - set(NEEDS)
    if unknown:
        raise SystemExit(f"compare: unknown scenarios {sorted(unknown)}; "
                         f"known: {', '.join(NEEDS)}")
    want |= {NEEDS[s] for s in want}
    return [s for s in allv if s[0] in want]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default="rookery,prosody,ejabberd")
    ap.add_argument("--base-port", type=int, default=41000)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--msg-rate", type=float, default=1000)
    ap.add_argument("--msg-seconds", type=float, default=10)
    ap.add_argument("--sat-users", type=int, default=200)
    ap.add_argument("--presence-users", type=int, default=500)
    ap.add_argument("--contacts", type=int, default=50)
    ap.add_argument("--idle-seconds", type=float, default=5)
    ap.add_argument("--fanout-users", type=int, default=1000,
                    help="occupants of the muc-fanout room")
    ap.add_argument("--fanout-senders", type=int, default=10)
    ap.add_argument("--fanout-rate", type=float, default=5,
                    help="groupchat messages/s to the room in all (x occupants = copies/s)")
    ap.add_argument("--fanout-seconds", type=float, default=10)
    ap.add_argument("--scenarios", default="",
                    help="comma-separated scenarios to run (default: all): "
                         "idle,login,msg-rate,msg-max,presence,muc-fanout")
    ap.add_argument("--threads", type=int, default=1, help="load generator threads")
    ap.add_argument("--scenario-timeout", type=float, default=300)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--out", default=None, help="append the JSON lines to this file")
    ap.add_argument("--peer-storage", choices=["default", "sql"], default="default",
                    help="the peers' storage: their out-of-the-box backends (Prosody's "
                         "internal files, ejabberd's mnesia) or SQLite for both")
    args = ap.parse_args()
    if args.quick:
        args.users, args.msg_rate, args.msg_seconds = 200, 200, 3
        args.sat_users, args.presence_users, args.contacts, args.idle_seconds = 50, 60, 10, 1
        args.fanout_users, args.fanout_seconds = 100, 3
    which = tuple(s.strip() for s in args.servers.split(",") if s.strip())
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    rookery_bin = os.path.join(target, "release", "rookery")
    load_bin = os.path.join(target, "release", "rookery-load")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "rookery",
                        "-p", "rookery-loadtest"], cwd=ROOT, check=True)
    import tempfile
    args.salt_dir = tempfile.mkdtemp(prefix="rookery-load-salts-")
    t_start = time.monotonic()
    results: dict[tuple[str, str], dict] = {}
    names: list[str] = []
    with peers.PeerSet(rookery_bin, args.base_port, which=which,
                       peer_storage=args.peer_storage) as ps:
        for srv in ps.servers:
            names.append(srv.name)
            for key, scenario, extra in selected(args):
                if key == "presence" and hasattr(srv, "write_rosters") and \
                        srv.write_rosters("pres", args.presence_users, args.contacts):
                    print(f"compare: {srv.name}: presence rosters written to its file store",
                          file=sys.stderr)
                print(f"compare: {srv.name} {key} ...", file=sys.stderr)
                try:
                    results[(srv.name, key)] = run_load(load_bin, scenario, srv, args, extra)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    print(f"compare: {e}", file=sys.stderr)
    total = time.monotonic() - t_start
    if args.out:
        with open(args.out, "a") as f:
            for (name, key), r in results.items():
                f.write(json.dumps({"compare_scenario": key, **r}) + "\n")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    print(f"\nRookery vs peers, commit {commit}, {time.strftime('%Y-%m-%d')}, "
          f"{os.cpu_count()} CPUs, sizes: users={args.users} msg_rate={args.msg_rate} "
          f"msg_seconds={args.msg_seconds} sat_users={args.sat_users} "
          f"presence_users={args.presence_users}x{args.contacts} idle_s={args.idle_seconds} "
          f"fanout={args.fanout_users} occupants, {args.fanout_senders} senders, "
          f"{args.fanout_rate:g} msg/s, {args.fanout_seconds:g} s, "
          f"peer storage {args.peer_storage}; run took {total:.0f} s")
    rookery = next((n for n in names if n == "Rookery"), None)
    peer_names = [n for n in names if n != rookery]
    header = ["scenario", "figure", *names]
    if rookery and peer_names:
        header.append("Rookery vs best peer")
    rows = [header]
    ran = {k for k, _, _ in selected(args)}
    for key, path, label, higher in ROWS:
        if key not in ran:
            continue
        vals = {n: get(results.get((n, key)), path) for n in names}
        row = [key, label, *[fmt(vals[n]) for n in names]]
        if rookery and peer_names:
            mine = vals.get(rookery)
            others = [vals[n] for n in peer_names if isinstance(vals[n], (int, float))]
            ratio = ""
            if higher is not None and isinstance(mine, (int, float)) and others:
                best = max(others) if higher else min(others)
                if higher and best > 0:
                    ratio = f"{mine / best:.2f}x"
                elif not higher and mine > 0:
                    ratio = f"{best / mine:.2f}x better" if best >= mine else \
                        f"{mine / best:.2f}x worse" if best > 0 else ""
                elif not higher and mine == 0 and best == 0:
                    ratio = "equal"
            row.append(ratio)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for i, r in enumerate(rows):
        print("| " + " | ".join(c.ljust(widths[j]) for j, c in enumerate(r)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    errors = {f"{n} {k}": r.get("errors") for (n, k), r in results.items() if r.get("errors")}
    if errors:
        print(f"\nerrors: {errors}")
    missing = [f"{n} {k}" for n in names for k, _, _ in selected(args) if (n, k) not in results]
    if missing:
        print(f"missing (failed to run): {missing}")
    return 0 if not missing else 1


if __name__ == "__main__":
    sys.exit(main())
