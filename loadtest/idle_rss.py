#!/usr/bin/env python3
"""Idle-connection memory probe: opens N authenticated, bound TLS client
connections (STARTTLS, SASL PLAIN, bind, initial presence) to a running
Rookery and reports the server's RSS growth per connection, read from
/proc/PID/status. Stand-in until the load generator of the load-test issue.

Usage: idle_rss.py --pid PID --port 5222 --users N (accounts u0..uN-1 / pw)
Loopback only; bounded in count; exits after measuring.
"""
import argparse, asyncio, base64, ssl, time


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def read_until(reader, token, limit=65536):
    buf = b""
    while token not in buf:
        chunk = await reader.read(4096)
        if not chunk:
            raise RuntimeError(f"closed waiting for {token!r}: {buf[-200:]!r}")
        buf += chunk
        if len(buf) > limit:
            raise RuntimeError("too much data")
    return buf


HEADER = ("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams'>")


async def login(port, i, ctx):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(HEADER.encode()); await read_until(r, b"</stream:features>")
    w.write(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"); await read_until(r, b"<proceed")
    await w.start_tls(ctx, server_hostname="localhost")
    w.write(HEADER.encode()); await read_until(r, b"</stream:features>")
    cred = base64.b64encode(f"\0u{i}\0pw".encode()).decode()
    w.write(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{cred}</auth>".encode())
    await read_until(r, b"<success")
    w.write(HEADER.encode()); await read_until(r, b"</stream:features>")
    w.write(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq><presence/>")
    await read_until(r, b"<presence")
    return r, w


async def main(a):
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    before = rss_kib(a.pid)
    t0 = time.time()
    conns = []
    sem = asyncio.Semaphore(50)

    async def one(i):
        async with sem:
            conns.append(await login(a.port, i, ctx))
    await asyncio.gather(*(one(i) for i in range(a.users)))
    took = time.time() - t0
    await asyncio.sleep(2)  # let buffers settle
    after = rss_kib(a.pid)
    per = (after - before) / a.users
    print(f"connections={a.users} login_seconds={took:.1f} rss_before_kib={before} "
          f"rss_after_kib={after} per_connection_kib={per:.1f}")
    for r, w in conns:
        w.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--port", type=int, default=5222)
    p.add_argument("--users", type=int, default=1000)
    asyncio.run(main(p.parse_args()))
