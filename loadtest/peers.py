#!/usr/bin/env python3
"""Peer XMPP servers for the load comparison: Rookery, Prosody and ejabberd
side by side, in one temporary directory, all serving the domain `load.test`
on loopback only.

Python 3.11 standard library only. As a module:

    from peers import PeerSet
    with PeerSet(rookery_bin="target/release/rookery", base_port=40000) as ps:
        for srv in ps.servers:          # Rookery, Prosody, Ejabberd
            print(srv.name, srv.port, srv.pid())   # /proc/PID/{stat,status}

or one server at a time (`Rookery(tmp, cert, port, bin)`, `Prosody(...)`,
`Ejabberd(...)`, each with start(), pid(), stop(), name, port, direct_tls_port).

As a CLI (installs what is missing, starts all three, registers `check1` on
each with XEP-0077 over STARTTLS, logs in with SCRAM-SHA-1, binds, sends a
message to itself and reads it back, stops everything, checks no process is
left):

    python3 loadtest/peers.py --rookery-bin target/release/rookery \
        --base-port 40000 --check
    python3 loadtest/peers.py ... --serve   # start all three, wait for Ctrl-C

Ports (all on 127.0.0.1; BASE = --base-port):

    server    c2s STARTTLS   direct TLS (XEP-0368)   other
    Rookery   BASE+0         BASE+1                  [http] metrics: a free port
    Prosody   BASE+10        BASE+11                 -
    ejabberd  BASE+20        BASE+21                 Erlang distribution BASE+29
                                                     (ERL_DIST_PORT, no epmd)

Common to all three: one ECDSA P-256 self-signed certificate for load.test
(SAN DNS:load.test, CA:FALSE, made with openssl), SCRAM-SHA-1 credentials
with 4096 PBKDF2 iterations, SQLite storage, TLS required before
authentication, open in-band registration without throttling, message
archiving (MAM) on by default for every account, no s2s, no HTTP except
Rookery's metrics endpoint. Every child gets the same RLIMIT_NOFILE:
1048576 soft and hard where the hard limit may be raised, else soft = hard
(in this sandbox root may not raise it: 20000 for all three, measured in
/proc/PID/limits). Listen backlog: 4096
for Prosody (network_settings.tcp_backlog, default 128) and ejabberd
(listener `backlog`, default 5); Rookery's is whatever its code passes
(128 measured with `ss -ltn` on its listeners; not configurable).

Settings and why
----------------
Rookery: domain, data_dir (tmp), [tls] the shared cert/key, c2s listen and
  direct_tls_listen, [registration] enabled with min_interval_secs = 0,
  [http] on a free loopback port, [log] level warn. Everything else at its
  defaults (docs/configuration.md), including scram_iterations = 4096.

Prosody 0.12 (Debian bookworm): `prosody -F --config FILE` (the 0.12
  argument parser, util/startup.lua, takes -F/--no-daemonize and --config;
  no PROSODY_CONFIG needed). run_as_root = true, pidfile/data_path/log in
  tmp. network_backend = "epoll" (the default and recommended backend since
  0.12, `prosodyctl about` prints "Backend: epoll"; use_libevent is the
  pre-0.12 libevent backend and is not used) with
  network_settings = { nagle = false, tcp_backlog = 4096 } (both read by
  server_epoll.lua; Prosody's defaults are nagle on and backlog 128).
  Storage (peer_storage): "default" keeps Prosody's out-of-the-box
  "internal" file store (accounts, rosters and archives in files under
  data_path); "sql" sets storage = "sql" with sql = { driver = "SQLite3",
  database = "prosody.sqlite" } (lua-dbi-sqlite3), the commented-out choice
  of Debian's /etc/prosody/prosody.cfg.lua and the backend
  prosody.im/doc/modules/mod_mam shows for archives. Measured here, SQLite
  in Prosody 0.12 (rollback journal, a sync per write) is an order of
  magnitude slower than its file store under message load, so the
  comparison defaults to the file store (as does ejabberd's, below, to
  mnesia). Modules: roster,
  saslauth, tls, disco, ping, register, mam (default_archive_policy =
  true), carbons, smacks (bundled in 0.12); presence/message/iq/offline/c2s
  are auto-loaded. mod_limits is NOT loaded (it is only active when listed
  in modules_enabled; Debian's stock config enables it with c2s rate =
  "10kb/s"), so c2s is not rate limited; `limits = { c2s = { rate =
  "100mb/s" } }` is also set in case a caller adds it. Registration throttling: mod_register_limits only throttles
  when min_seconds_between_registrations / registration_throttle_max is set
  and never for registration_allowlist (default 127.0.0.1, ::1); neither is
  set (min_seconds_between_registrations = 0 would give a throttle with
  period 0, i.e. rate = inf, and inf*0 = NaN when two registrations share a
  timestamp, which refuses them), and the allowlist is set explicitly.
  authentication = "internal_hashed", default_iteration_count = 4096
  (Prosody's default is 10000; 4096 equals Rookery and ejabberd, so a login
  costs the same PBKDF2 work everywhere), c2s_require_encryption = true,
  c2s_direct_tls_ports (supported since 0.12), s2s_ports = {},
  http_ports = https_ports = {}.

ejabberd 23.01 (Debian bookworm): `runuser -u ejabberd -- /bin/sh -c
  'ulimit -Sn "$(ulimit -Hn)"; exec "$@"' sh env HOME=<tmp> ejabberdctl --ctl-config <tmp> --config-dir <tmp> --config <tmp>.yml
  --spool <tmp> --logs <tmp> --node ejabberd_load_<pid>_<rand>@localhost
  foreground`. Run as the ejabberd user (ejabberdctl refuses other users
  and would `su` anyway); HOME in tmp puts the Erlang cookie there; the
  `ulimit` undoes runuser's PAM session (pam_limits), which drops the soft
  RLIMIT_NOFILE to 1024 (measured) and would cap ejabberd near 1000
  connections while the other two get the full limit. The
  --ctl-config is ours because Debian's /etc/ejabberd/ejabberdctl.cfg sets
  EJABBERD_CONFIG_PATH unconditionally and is sourced AFTER the command
  line is parsed, so `--config` alone is silently overridden by it.
  ERL_DIST_PORT = BASE+29 makes the node listen on a fixed distribution port
  with -start_epmd false, so no (shared) epmd is started and runs do not
  clash; the node name is unique per run as well. ERL_MAX_PORTS = 262144
  (Debian's ejabberdctl.cfg: "ejabberd consumes two or three ports for
  every connection"; ejabberdctl's own default of 32000 would cap the c2s
  count near 10000), +K true and +P 250000 as ejabberdctl sets them.
  Config: hosts [load.test], certfiles = the shared cert+key concatenated in
  one PEM owned by ejabberd (0600); c2s listener on 127.0.0.1:BASE+20 with
  starttls_required, backlog 4096 (the listener default is 5,
  ejabberd_listener:listen_options/0; Debian's c2s listener does not set
  it), max_stanza_size 262144 (as Debian's example config, = Rookery's and
  Prosody's limit), shaper none via shaper_rules c2s_shaper (Debian's
  `normal: 3000` B/s shaper for `all` would throttle a load test);
  direct-TLS listener on BASE+21 (tls: true). auth_method internal,
  auth_password_format scram (auth_scram_hash sha, i.e. SCRAM-SHA-1; the
  iteration count is hard-coded 4096 in 23.01,
  ejabberd_auth:password_to_scram/2, not configurable). NOTE: in ejabberd
  `internal` means mnesia (ejabberd_auth_mnesia), so the accounts live in
  mnesia (disc_copies, cached in RAM, spool dir in tmp) while roster, MAM,
  offline etc. go to SQLite; `Ejabberd(..., auth_method="sql")` keeps the
  accounts in SQLite as well (the other two keep theirs in SQLite).
  Storage (peer_storage): "default" is ejabberd's out-of-the-box mnesia
  for everything; with "sql": default_db sql, sql_type sqlite (erlang-p1-sqlite3), database in
  tmp; ejabberd 23.01 does not create the SQLite schema itself, so the
  shipped /usr/share/ejabberd/sql/lite.sql is loaded with Python's sqlite3
  first. (ejabberd's mod_mam warns at start with a mnesia backend that it
  is "limited to 2GB" and that SQL, SQLite for small servers, is
  recommended: src/mod_mam.erl start/2.) If erlang-p1-sqlite3 cannot be had
  the module falls back to mnesia (the spool dir in tmp). Modules: mod_roster,
  mod_mam (default: always), mod_carboncopy (ejabberd's name for XEP-0280
  carbons; there is no mod_carbons), mod_stream_mgmt, mod_disco,
  mod_ping, mod_caps, mod_offline (Prosody auto-loads offline, Rookery has
  it), mod_register (ip_access all, access: register = allow all,
  registration_timeout: infinity). loglevel warning. No s2s listener,
  s2s_access none, no HTTP listener.

MUC (the muc-fanout scenario, one room of 1,000 occupants on
  conference.load.test, 20 history messages kept, nothing archived):
  Rookery `[muc] max_occupants_per_room = 2000` (default 200) and
  `archive_by_default = false` (room archives came after these figures). Prosody
  `Component "conference.load.test" "muc"` (0.12's mod_muc has no occupant
  or rate limit: those are community modules, not loaded; rooms are locked
  until configured, muc_room_locking, which the scenario does as clients
  do). ejabberd mod_muc with max_users 2000 (service cap, default 200) and
  default_room_options max_users 2000 (default 200), max_users_presence
  2000 (default 1000: above it a room counts as "overcrowded" and presence
  broadcasts are cut), the anti-flood options min_message_interval /
  min_presence_interval 0 and room_shaper / user_message_shaper /
  user_presence_shaper none (their defaults, set explicitly),
  max_user_conferences 100 (default; each account joins one room); source:
  ejabberd's src/mod_muc.erl mod_options/1 and mod_doc/0.

Processes and pid(): Rookery's pid() is the binary itself; Prosody's is the
lua5.4 process (/usr/bin/prosody is a `#!/usr/bin/env lua5.4` script, env
execs lua); ejabberd's is the beam.smp of our node (found among the
descendants of the runuser wrapper), not ejabberdctl/runuser. stop() sends
SIGTERM to that process (Erlang/OTP >= 20 treats SIGTERM as init:stop(), a
clean shutdown; observed: ejabberd exits 0 in about 1 s), waits 20 s, then SIGKILLs the whole process group; the wrapper
is reaped. Every child runs in its own session (process group), and an
atexit hook stops whatever is still running.

Versions: `prosodyctl about` (Prosody 0.12.3 here) or `dpkg-query -W prosody
ejabberd`. Do NOT run `prosody --version`: 0.12 has no such flag, ignores it
and starts the system-wide server from /etc/prosody (0.0.0.0:5222/5269).

Packages: if prosody, lua-dbi-sqlite3, ejabberd or erlang-p1-sqlite3 is
missing, `apt-get install --no-install-recommends` installs it (after one
`apt-get update`); if /usr/sbin/policy-rc.d does not exist, a temporary one
that denies service starts is put there for the install and removed after,
so the Debian packages do not start the system-wide daemons on 5222.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import hashlib
import hmac
import os
import pwd
import random
import resource
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape as xml_escape

DOMAIN = "load.test"
START_TIMEOUT = 60.0
PACKAGES = ["prosody", "lua-dbi-sqlite3", "ejabberd", "erlang-p1-sqlite3"]

NS_STREAM = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_CLIENT = "jabber:client"

_LIVE: list["Peer"] = []


@atexit.register
def _stop_all_at_exit() -> None:
    for srv in list(_LIVE):
        try:
            srv.stop()
        except Exception as e:  # noqa: BLE001 - best effort at exit
            print(f"peers: stopping {srv.name} at exit: {e}", file=sys.stderr)


# ---------------------------------------------------------------- setup


def _pkg_installed(name: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name],
                       capture_output=True, text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


def ensure_packages(packages=PACKAGES) -> None:
    """apt-get install the Debian packages that are missing (root only)."""
    missing = [p for p in packages if not _pkg_installed(p)]
    if not missing:
        return
    print(f"peers: installing {' '.join(missing)}", file=sys.stderr)
    policy = "/usr/sbin/policy-rc.d"
    made_policy = False
    if not os.path.exists(policy):
        with open(policy, "w") as f:
            f.write("#!/bin/sh\n# temporary, loadtest/peers.py: no service starts\nexit 101\n")
        os.chmod(policy, 0o755)
        made_policy = True
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                       env=env, check=True)
    finally:
        if made_policy:
            os.unlink(policy)


def make_cert(tmp: str) -> tuple[str, str]:
    """One ECDSA P-256 self-signed certificate for load.test; returns (cert, key)."""
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", f"/CN={DOMAIN}",
         "-addext", f"subjectAltName=DNS:{DOMAIN}",
         "-addext", "basicConstraints=critical,CA:FALSE"],
        check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NOFILE = 1048576


def _raise_nofile() -> None:
    """preexec_fn: the same RLIMIT_NOFILE for every server (root may raise the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/fs/nr_open") as f:
            want = min(NOFILE, int(f.read()))
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (OSError, ValueError):
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _tail(path: str, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()[-16384:].decode("utf-8", "replace")
        return "\n".join(data.splitlines()[-lines:])
    except OSError as e:
        return f"(no log {path}: {e})"


def _ppid_map() -> dict[int, int]:
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        out[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(pid: int) -> list[int]:
    pp = _ppid_map()
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, par in pp.items() if par == p]
        found += kids
        frontier += kids
    return found


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def pids_in_session(sid: int) -> list[int]:
    """Live processes whose session id is sid (our children each get one)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(d))
    return out


# ---------------------------------------------------------------- XMPP client


def _header(to: str = DOMAIN) -> bytes:
    return (f"<?xml version='1.0'?><stream:stream to='{to}' version='1.0' xml:lang='en' "
            f"xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAM}'>").encode()


class XmppError(Exception):
    pass


class Stream:
    """Minimal blocking XMPP client stream over a (TLS) socket."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.queue: list[ET.Element] = []
        self._new_parser()

    def _new_parser(self) -> None:
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0

    def send(self, data: str | bytes) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def restart(self) -> None:
        self._new_parser()
        self.send(_header())

    def recv(self) -> ET.Element:
        """Next top-level element (child of <stream:stream>)."""
        while not self.queue:
            data = self.sock.recv(65536)
            if not data:
                raise XmppError("connection closed by server")
            self.parser.feed(data)
            for ev, el in self.parser.read_events():
                if ev == "start":
                    self.depth += 1
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.queue.append(el)
                    elif self.depth == 0:
                        raise XmppError("server closed the stream")
        el = self.queue.pop(0)
        if el.tag == f"{{{NS_STREAM}}}error":
            raise XmppError("stream error: " + ", ".join(c.tag.split("}")[-1] for c in el))
        return el

    def starttls(self) -> ET.Element:
        """Stream header, <starttls/>, TLS, new header; returns the TLS features."""
        self.send(_header())
        feats = self.recv()
        if feats.find(f"{{{NS_TLS}}}starttls") is None:
            raise XmppError("no <starttls/> in features")
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        el = self.recv()
        if el.tag != f"{{{NS_TLS}}}proceed":
            raise XmppError(f"starttls answered {el.tag}")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname=DOMAIN)
        self.restart()
        return self.recv()

    def close(self) -> None:
        try:
            self.send("</stream:stream>")
        except OSError:
            pass
        self.sock.close()


def mechanisms(features: ET.Element) -> list[str]:
    mechs = features.find(f"{{{NS_SASL}}}mechanisms")
    return [] if mechs is None else [m.text or "" for m in mechs]


def register(host: str, port: int, user: str, password: str) -> None:
    """XEP-0077 in-band registration over STARTTLS (direct set, no form fetch)."""
    s = Stream(host, port)
    try:
        s.starttls()
        s.send(f"<iq type='set' id='reg1'><query xmlns='jabber:iq:register'>"
               f"<username>{xml_escape(user)}</username><password>{xml_escape(password)}"
               f"</password></query></iq>")
        el = s.recv()
        if el.tag != f"{{{NS_CLIENT}}}iq" or el.get("type") != "result":
            raise XmppError("registration refused: " + ET.tostring(el, encoding="unicode")[:400])
    finally:
        s.close()


def _scram_sha1(s: Stream, user: str, password: str) -> int:
    """SCRAM-SHA-1 without channel binding (gs2 'n'); returns the server's iteration count."""
    cnonce = base64.b64encode(secrets.token_bytes(18)).decode()
    saslname = user.replace("=", "=3D").replace(",", "=2C")
    first_bare = f"n={saslname},r={cnonce}"
    s.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-1'>"
           f"{base64.b64encode(('n,,' + first_bare).encode()).decode()}</auth>")
    el = s.recv()
    if el.tag != f"{{{NS_SASL}}}challenge":
        raise XmppError(f"SCRAM: expected challenge, got {ET.tostring(el, encoding='unicode')[:300]}")
    server_first = base64.b64decode(el.text or "").decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    nonce, salt, iters = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
    if not nonce.startswith(cnonce):
        raise XmppError("SCRAM: server nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iters)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha1).digest()
    stored_key = hashlib.sha1(client_key).digest()
    final_wo_proof = f"c={base64.b64encode(b'n,,').decode()},r={nonce}"
    auth_msg = f"{first_bare},{server_first},{final_wo_proof}".encode()
    sig = hmac.new(stored_key, auth_msg, hashlib.sha1).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, sig))
    final = f"{final_wo_proof},p={base64.b64encode(proof).decode()}"
    s.send(f"<response xmlns='{NS_SASL}'>{base64.b64encode(final.encode()).decode()}</response>")
    el = s.recv()
    if el.tag != f"{{{NS_SASL}}}success":
        raise XmppError(f"SCRAM failed: {ET.tostring(el, encoding='unicode')[:300]}")
    server_key = hmac.new(salted, b"Server Key", hashlib.sha1).digest()
    expected = base64.b64encode(hmac.new(server_key, auth_msg, hashlib.sha1).digest()).decode()
    final_msg = base64.b64decode(el.text or "").decode()
    if f"v={expected}" not in final_msg.split(","):
        raise XmppError(f"SCRAM: bad server signature {final_msg!r}")
    return iters


def login_and_echo(host: str, port: int, user: str, password: str) -> tuple[list[str], int]:
    """STARTTLS, SCRAM-SHA-1, bind, presence, message to own full JID and back.
    Returns the SASL mechanisms offered after TLS and the SCRAM iteration count."""
    s = Stream(host, port)
    try:
        feats = s.starttls()
        mechs = mechanisms(feats)
        if "SCRAM-SHA-1" not in mechs:
            raise XmppError(f"SCRAM-SHA-1 not offered: {mechs}")
        iters = _scram_sha1(s, user, password)
        s.restart()
        feats = s.recv()
        if feats.find(f"{{{NS_BIND}}}bind") is None:
            raise XmppError("no bind feature after SASL")
        s.send(f"<iq type='set' id='bind1'><bind xmlns='{NS_BIND}'><resource>check</resource>"
               f"</bind></iq>")
        el = s.recv()
        jid_el = el.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid")
        if el.get("type") != "result" or jid_el is None:
            raise XmppError("bind failed: " + ET.tostring(el, encoding="unicode")[:300])
        jid = jid_el.text
        if feats.find("{urn:ietf:params:xml:ns:xmpp-session}session") is not None:
            s.send("<iq type='set' id='sess1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        s.send("<presence/>")
        token = secrets.token_hex(8)
        s.send(f"<message to='{jid}' type='chat' id='m-{token}'><body>{token}</body></message>")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            el = s.recv()
            if el.tag == f"{{{NS_CLIENT}}}message":
                if el.get("type") == "error":
                    raise XmppError("message bounced: " + ET.tostring(el, encoding="unicode")[:300])
                if el.findtext(f"{{{NS_CLIENT}}}body") == token:
                    return mechs, iters
        raise XmppError("own message not received within 10 s")
    finally:
        s.close()


def probe_features(host: str, port: int, timeout: float = 3.0) -> bool:
    """True when the port answers a stream header with features holding <starttls/>."""
    try:
        s = Stream(host, port, timeout=timeout)
    except OSError:
        return False
    try:
        s.send(_header())
        el = s.recv()
        return el.tag == f"{{{NS_STREAM}}}features" and el.find(f"{{{NS_TLS}}}starttls") is not None
    except (OSError, XmppError, ET.ParseError):
        return False
    finally:
        try:
            s.sock.close()
        except OSError:
            pass


def probe_direct_tls(host: str, port: int, timeout: float = 5.0) -> bool:
    """True when a direct-TLS (XEP-0368, ALPN xmpp-client) port answers with features."""
    try:
        s = Stream(host, port, timeout=timeout)
    except OSError:
        return False
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["xmpp-client"])
        s.sock = ctx.wrap_socket(s.sock, server_hostname=DOMAIN)
        s.send(_header())
        return s.recv().tag == f"{{{NS_STREAM}}}features"
    except (OSError, XmppError, ET.ParseError):
        return False
    finally:
        s.sock.close()


# ---------------------------------------------------------------- servers


class Peer:
    name = "peer"

    def __init__(self, tmp: str, cert: str, key: str, port: int):
        self.tmp, self.cert, self.key, self.port = tmp, cert, key, port
        self.direct_tls_port = port + 1
        self.dir = os.path.join(tmp, self.name.lower())
        os.makedirs(self.dir, exist_ok=True)
        self.log = os.path.join(self.dir, "stdout.log")
        self.proc: subprocess.Popen | None = None

    # subclasses: configure() and command(); may override pid()/log_files()
    def configure(self) -> None:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def log_files(self) -> list[str]:
        return [self.log]

    def log_tail(self) -> str:
        return "\n".join(f"--- {p}\n{_tail(p)}" for p in self.log_files())

    def start(self) -> None:
        self.configure()
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, cwd=self.dir, env=self.env(),
                                     start_new_session=True, preexec_fn=_raise_nofile)
        out.close()
        _LIVE.append(self)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} while "
                                   f"starting\n{tail}")
            if probe_features("127.0.0.1", self.port):
                break
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"{self.name} did not answer on 127.0.0.1:{self.port} with "
                                   f"<stream:features><starttls/> within {START_TIMEOUT:.0f} s\n"
                                   f"{tail}")
            time.sleep(0.25)
        pid = self.pid()
        if not _alive(pid):
            raise RuntimeError(f"{self.name}: serving pid {pid} is not alive")

    def pid(self) -> int:
        """PID of the process that serves connections (read /proc/PID/stat, status)."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    def session_pids(self) -> list[int]:
        return pids_in_session(self.proc.pid) if self.proc else []

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        try:
            target = self.pid() if self.proc.poll() is None else None
        except Exception:  # noqa: BLE001 - serving process may be gone
            target = None
        if target and _alive(target):
            try:
                os.kill(target, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                # the wrapper is gone: give stragglers in its session 2 s more
                deadline = min(deadline, time.monotonic() + 2)
                if not self.session_pids():
                    break
            time.sleep(0.1)
        left = self.session_pids()
        if left or self.proc.poll() is None:
            print(f"peers: {self.name} did not stop in time, SIGKILL {left}",
                  file=sys.stderr)
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        if self in _LIVE:
            _LIVE.remove(self)


class Rookery(Peer):
    name = "Rookery"

    def __init__(self, tmp, cert, key, port, binary):
        super().__init__(tmp, cert, key, port)
        self.binary = os.path.abspath(binary)
        self.http_port = free_port()
        self.config = os.path.join(tmp, "rookery.toml")

    def configure(self) -> None:
        with open(self.config, "w") as f:
            f.write(f"""# generated by loadtest/peers.py
[server]
domain = "{DOMAIN}"
data_dir = "{self.dir}/data"

[tls]
cert = "{self.cert}"
key = "{self.key}"

[c2s]
listen = ["127.0.0.1:{self.port}"]
direct_tls_listen = ["127.0.0.1:{self.direct_tls_port}"]

[s2s]
enabled = false

[registration]
enabled = true
min_interval_secs = 0

[http]
listen = ["127.0.0.1:{self.http_port}"]

[web]
tls_listen = []

[log]
level = "warn"

# muc-fanout: one room of 1,000 occupants (default cap 200); rooms do not
# archive, as on the peers (Prosody's mod_muc_mam is not loaded, ejabberd's
# rooms have mam off by default).
[muc]
max_occupants_per_room = 2000
archive_by_default = false
""")

    def command(self) -> list[str]:
        return [self.binary, "serve", "--config", self.config]


class Prosody(Peer):
    name = "Prosody"

    def __init__(self, tmp, cert, key, port, storage: str = "default"):
        super().__init__(tmp, cert, key, port)
        self.storage = storage
        self.config = os.path.join(tmp, "prosody.cfg.lua")
        self.logfile = os.path.join(self.dir, "prosody.log")

    def configure(self) -> None:
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        os.makedirs(os.path.join(self.dir, "certs"), exist_ok=True)
        with open(self.config, "w") as f:
            f.write(f"""-- generated by loadtest/peers.py (Prosody 0.12)
run_as_root = true
pidfile = "{self.dir}/prosody.pid"
certificates = "{self.dir}/certs" -- empty: the ssl options below name the cert
data_path = "{self.dir}/data"
log = {{ warn = "{self.logfile}" }}

network_backend = "epoll"
network_settings = {{ nagle = false, tcp_backlog = 4096 }}

interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.port} }}
c2s_direct_tls_ports = {{ {self.direct_tls_port} }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}

modules_enabled = {{
    "roster"; "saslauth"; "tls"; "disco"; "ping"; "register";
    "mam"; "carbons"; "smacks";
}}
-- mod_limits is not loaded; should a caller load it, it does not throttle:
limits = {{ c2s = {{ rate = "100mb/s" }} }}

c2s_require_encryption = true
authentication = "internal_hashed"
default_iteration_count = 4096

allow_registration = true
registration_allowlist = {{ "127.0.0.1", "::1" }}

{self._storage_lines()}
default_archive_policy = true

ssl = {{ certificate = "{self.cert}", key = "{self.key}" }}

VirtualHost "{DOMAIN}"
    ssl = {{ certificate = "{self.cert}", key = "{self.key}" }}

-- muc-fanout. Prosody 0.12's mod_muc has no occupant limit and no rate
-- limit (those are the community modules mod_muc_limits/mod_muc_max_occupants,
-- not loaded); history as Rookery's (20), nothing archived (no mod_muc_mam).
Component "conference.{DOMAIN}" "muc"
    muc_room_default_history_length = 20
""")

    def write_rosters(self, prefix: str, n: int, k: int) -> bool:
        """Writes the presence scenario's rosters (accounts prefix0..n-1, each
        with the k/2 accounts on either side of it on a ring, subscription
        both) straight into Prosody's file store, in the format Prosody 0.12
        writes itself (data_path/<host>/roster/<user>.dat). For the default
        storage only, and before any of those accounts logs in: Prosody reads
        a roster when the account's first session starts. Returns False when
        it cannot (SQL storage). Provisioning is never measured; this only
        saves the 12,500 subscription handshakes that Prosody's file store
        does not finish in the scenario's time limit."""
        if self.storage == "sql":
            return False
        host = DOMAIN.replace(".", "%2e")
        d = os.path.join(self.dir, "data", host, "roster")
        os.makedirs(d, exist_ok=True)
        for i in range(n):
            contacts = sorted({(i + j) % n for j in range(1, k // 2 + 1)}
                              | {(i + n - j) % n for j in range(1, k // 2 + 1)})
            lines = ["return {", "\t[false] = {", '\t\t["version"] = 1;',
                     '\t\t["pending"] = {};', "\t};"]
            for c in contacts:
                lines += [f'\t["{prefix}{c}@{DOMAIN}"] = {{', '\t\t["subscription"] = "both";',
                          '\t\t["groups"] = {};', "\t};"]
            lines.append("};")
            with open(os.path.join(d, f"{prefix}{i}.dat"), "w") as f:
                f.write("\n".join(lines) + "\n")
        return True

    def _storage_lines(self) -> str:
        if self.storage == "sql":
            return 'storage = "sql"\nsql = { driver = "SQLite3", database = "prosody.sqlite" }'
        return '-- storage: Prosody\'s default ("internal", files under data_path)'

    def command(self) -> list[str]:
        return ["prosody", "-F", "--config", self.config]

    def log_files(self) -> list[str]:
        return [self.log, self.logfile]

    def pid(self) -> int:
        # /usr/bin/prosody: `#!/usr/bin/env lua5.4`; env execs lua, same pid.
        assert self.proc is not None, "not started"
        return self.proc.pid


class Ejabberd(Peer):
    name = "ejabberd"
    user = "ejabberd"

    def __init__(self, tmp, cert, key, port, auth_method: str = "internal",
                 storage: str = "default"):
        super().__init__(tmp, cert, key, port)
        self.auth_method = auth_method
        self.storage = storage
        self.dist_port = port + 9
        self.node = f"ejabberd_load_{os.getpid()}_{random.randrange(1 << 30):x}@localhost"
        self.config = os.path.join(self.dir, "ejabberd.yml")
        self.ctl_config = os.path.join(self.dir, "ejabberdctl.cfg")
        self.home = os.path.join(self.dir, "home")
        self.spool = os.path.join(self.dir, "spool")
        self.logs = os.path.join(self.dir, "logs")
        self.pem = os.path.join(self.dir, "load.test.pem")
        self.db = os.path.join(self.dir, "ejabberd.db")
        self._beam: int | None = None

    def _sqlite_available(self) -> bool:
        return _pkg_installed("erlang-p1-sqlite3")

    def configure(self) -> None:
        pw = pwd.getpwnam(self.user)
        for d in (self.home, self.spool, self.logs):
            os.makedirs(d, exist_ok=True)
        with open(self.pem, "w") as out:
            for part in (self.cert, self.key):
                with open(part) as f:
                    out.write(f.read())
        os.chmod(self.pem, 0o600)
        use_sql = self.storage == "sql" and self._sqlite_available()
        if use_sql:
            import sqlite3
            schema = "/usr/share/ejabberd/sql/lite.sql"
            con = sqlite3.connect(self.db)
            with open(schema) as f:
                con.executescript(f.read())
            con.close()
        with open(self.ctl_config, "w") as f:
            f.write(f"""# generated by loadtest/peers.py
ERLANG_NODE={self.node}
ERL_DIST_PORT={self.dist_port}
INET_DIST_INTERFACE=127.0.0.1
ERL_MAX_PORTS=262144
ERL_PROCESSES=250000
POLL=true
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
""")
        if os.path.exists("/etc/ejabberd/inetrc"):
            shutil.copy("/etc/ejabberd/inetrc", os.path.join(self.dir, "inetrc"))
        storage = (f"default_db: sql\nsql_type: sqlite\nsql_database: \"{self.db}\"\n"
                   if use_sql else "default_db: mnesia\n")
        with open(self.config, "w") as f:
            f.write(f"""# generated by loadtest/peers.py (ejabberd 23.01)
hosts:
  - "{DOMAIN}"
loglevel: warning
certfiles:
  - "{self.pem}"
{storage}
auth_method: {self.auth_method}
auth_password_format: scram
auth_scram_hash: sha
registration_timeout: infinity
s2s_access: none

listen:
  -
    port: {self.port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
    max_stanza_size: 262144
    shaper: c2s_shaper
    access: c2s
    backlog: 4096
  -
    port: {self.direct_tls_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    tls: true
    max_stanza_size: 262144
    shaper: c2s_shaper
    access: c2s
    backlog: 4096

shaper:
  normal:
    rate: 10000000
    burst_size: 20000000
  fast: 100000000

shaper_rules:
  max_user_sessions: 10
  max_user_offline_messages: 1000
  c2s_shaper: none

acl:
  local:
    user_regexp: ""
  loopback:
    ip:
      - 127.0.0.0/8
      - ::1/128

access_rules:
  local:
    allow: local
  c2s:
    allow: all
  register:
    allow: all
  trusted_network:
    allow: loopback

api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"

modules:
  mod_caps: {{}}
  mod_carboncopy: {{}}
  mod_disco: {{}}
  mod_mam:
    default: always
  mod_offline: {{}}
  mod_ping: {{}}
  mod_register:
    ip_access: all
    access: register
  mod_roster: {{}}
  mod_stream_mgmt: {{}}
  mod_muc:
    access_create: all
    max_users: 2000
    max_users_presence: 2000
    max_user_conferences: 100
    min_message_interval: 0
    min_presence_interval: 0
    room_shaper: none
    user_message_shaper: none
    user_presence_shaper: none
    history_size: 20
    default_room_options:
      max_users: 2000
      mam: false
""")
        for root, dirs, files in os.walk(self.dir):
            for n in dirs + files:
                os.chown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def command(self) -> list[str]:
        # runuser's PAM session (pam_limits) lowers the soft RLIMIT_NOFILE to
        # 1024; raise it back to the hard limit before ejabberdctl.
        return ["runuser", "-u", self.user, "--", "/bin/sh", "-c",
                'ulimit -Sn "$(ulimit -Hn)"; exec "$@"', "sh", "env", f"HOME={self.home}",
                "ejabberdctl", "--ctl-config", self.ctl_config, "--config-dir", self.dir,
                "--config", self.config, "--spool", self.spool, "--logs", self.logs,
                "--node", self.node, "foreground"]

    def log_files(self) -> list[str]:
        return [self.log, os.path.join(self.logs, "ejabberd.log"),
                os.path.join(self.logs, "error.log")]

    def pid(self) -> int:
        assert self.proc is not None, "not started"
        if self._beam and _alive(self._beam):
            return self._beam
        for p in descendants(self.proc.pid):
            if _comm(p).startswith("beam"):
                self._beam = p
                return p
        raise RuntimeError(f"ejabberd: no beam.smp under pid {self.proc.pid}")


# ---------------------------------------------------------------- set of three


def _writable_tmp() -> str:
    tmp = tempfile.mkdtemp(prefix="rookery-peers-")
    os.chmod(tmp, 0o755)  # the ejabberd user must reach its own subdirectory
    return tmp


class PeerSet:
    """The three servers in one temp dir. Use as a context manager."""

    def __init__(self, rookery_bin: str, base_port: int, which=("rookery", "prosody", "ejabberd"),
                 keep_tmp: bool = False, install: bool = True, peer_storage: str = "default"):
        if install and ({"prosody", "ejabberd"} & set(which)):
            ensure_packages()
        self.tmp = _writable_tmp()
        self.keep_tmp = keep_tmp
        cert, key = make_cert(self.tmp)
        os.chmod(key, 0o600)
        self.servers: list[Peer] = []
        if "rookery" in which:
            self.servers.append(Rookery(self.tmp, cert, key, base_port, rookery_bin))
        if "prosody" in which:
            self.servers.append(Prosody(self.tmp, cert, key, base_port + 10,
                                        storage=peer_storage))
        if "ejabberd" in which:
            self.servers.append(Ejabberd(self.tmp, cert, key, base_port + 20,
                                         storage=peer_storage))

    def start(self) -> None:
        for s in self.servers:
            t0 = time.monotonic()
            s.start()
            print(f"peers: {s.name} ready on 127.0.0.1:{s.port} (pid {s.pid()}, "
                  f"{time.monotonic() - t0:.1f} s)", file=sys.stderr)

    def stop(self) -> None:
        errors = []
        for s in reversed(self.servers):
            try:
                t0 = time.monotonic()
                running = s.proc is not None and s.proc.poll() is None
                s.stop()
                if running:
                    print(f"peers: {s.name} stopped in {time.monotonic() - t0:.1f} s "
                          f"(exit {s.proc.returncode})", file=sys.stderr)
            except Exception as e:  # noqa: BLE001
                errors.append(f"{s.name}: {e}")
        if not self.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if errors:
            raise RuntimeError("; ".join(errors))

    def __enter__(self) -> "PeerSet":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _leftovers(tmp: str, pids: list[int]) -> list[str]:
    """Processes still alive among pids, or whose command line mentions tmp."""
    left = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        p = int(d)
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if (p in pids or tmp in cmd) and _alive(p) and p != os.getpid():
            left.append(f"{p} {cmd[:160]}")
    return left


def check(args) -> int:
    ok = True
    ps = PeerSet(args.rookery_bin, args.base_port, which=args.only, keep_tmp=args.keep_tmp)
    tmp = ps.tmp
    pids: list[int] = []
    names: list[str] = []
    try:
        try:
            ps.start()
        except RuntimeError as e:
            print(f"FAIL start: {e}")
            return 1
        for s in ps.servers:
            pids += s.session_pids()
            names += [_comm(p) for p in s.session_pids()]
            try:
                with open(f"/proc/{s.pid()}/status") as f:
                    rss = next(line.split()[1] for line in f if line.startswith("VmRSS:"))
                with open(f"/proc/{s.pid()}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                cpu_ticks = int(fields[11]) + int(fields[12])
                t0 = time.monotonic()
                register("127.0.0.1", s.port, "check1", "pw")
                mechs, iters = login_and_echo("127.0.0.1", s.port, "check1", "pw")
                took = time.monotonic() - t0
                dtls = "ok" if probe_direct_tls("127.0.0.1", s.direct_tls_port) else "FAIL"
                print(f"{s.name:9} ok  c2s 127.0.0.1:{s.port} (direct TLS {s.direct_tls_port}: "
                      f"{dtls})  pid {s.pid()} ({_comm(s.pid())}, VmRSS {rss} kB, "
                      f"{cpu_ticks} ticks)  register+SCRAM-SHA-1(i={iters})+bind+echo "
                      f"{took:.2f} s  mechanisms: {' '.join(mechs)}")
            except Exception as e:  # noqa: BLE001
                ok = False
                print(f"{s.name:9} FAIL {type(e).__name__}: {e}")
                print(s.log_tail(), file=sys.stderr)
    finally:
        ps.stop()
    time.sleep(0.5)
    left = _leftovers(tmp, pids)
    if left:
        ok = False
        print("processes left:\n  " + "\n  ".join(left))
    else:
        print(f"stopped: no process left (of {len(pids)} started: "
              f"{', '.join(sorted(set(names)))})")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rookery-bin", default="target/release/rookery")
    ap.add_argument("--base-port", type=int, default=40000)
    ap.add_argument("--only", nargs="+", choices=["rookery", "prosody", "ejabberd"],
                    default=["rookery", "prosody", "ejabberd"])
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true",
                      help="start, register+login+echo on each, stop, verify nothing is left")
    mode.add_argument("--serve", action="store_true", help="start all and wait for Ctrl-C")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("peers.py needs root (apt-get, runuser ejabberd)", file=sys.stderr)
        return 2
    if "rookery" in args.only and not os.access(args.rookery_bin, os.X_OK):
        print(f"no executable {args.rookery_bin}: cargo build --release -p rookery",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.check:
        return check(args)
    with PeerSet(args.rookery_bin, args.base_port, which=args.only,
                 keep_tmp=args.keep_tmp) as ps:
        for s in ps.servers:
            print(f"{s.name:9} c2s 127.0.0.1:{s.port} direct-TLS {s.direct_tls_port} "
                  f"pid {s.pid()}")
        print(f"tmp: {ps.tmp}; Ctrl-C to stop")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
