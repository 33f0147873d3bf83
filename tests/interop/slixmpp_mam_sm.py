#!/usr/bin/python3
"""MAM and stream-management interop check with stock slixmpp (Debian's
python3-slixmpp 1.8).

  1. alice sends 15 chat messages to bob; bob pages through his archive with
     XEP-0313 (5 per page, forward and reverse) and must see all 15 in order;
  2. bob enables XEP-0198 with resumption, his TCP connection is cut
     (transport aborted, no stream close), alice sends 3 more messages while
     he is away, slixmpp reconnects and resumes, and bob must get all 3.
Exit 0 on success, 1 otherwise (3 if slixmpp is missing).
"""

import argparse
import asyncio
import ssl
import sys
import uuid

try:
    import slixmpp
except ImportError as e:  # pragma: no cover
    print(f"FAIL: cannot import slixmpp ({e}); install python3-slixmpp", file=sys.stderr)
    sys.exit(3)

DOMAIN = 'localhost'
TIMEOUT = 15.0


def say(msg):
    print(f"[slixmpp_mam_sm] {msg}", flush=True)


def client(user, resource, password, port, loop, sm=False):
    x = slixmpp.ClientXMPP(f"{user}@{DOMAIN}/{resource}", password)
    x.ssl_context.check_hostname = False
    x.ssl_context.verify_mode = ssl.CERT_NONE
    plugins = ['xep_0030', 'xep_0059', 'xep_0199', 'xep_0313']
    if sm:
        plugins.append('xep_0198')
    for p in plugins:
        x.register_plugin(p)
    x.ready = loop.create_future()
    x.inbox = asyncio.Queue()
    x.resumed = asyncio.Event()
    x.port = port

    async def start(_):
        await x.get_roster()
        x.send_presence()
        if not x.ready.done():
            x.ready.set_result(True)

    x.add_event_handler('session_start', start)
    x.add_event_handler('session_resumed', lambda _: x.resumed.set())
    x.sm_ready = asyncio.Event()
    x.add_event_handler('sm_enabled', lambda _: x.sm_ready.set())
    x.add_event_handler('message', lambda m: x.inbox.put_nowait(m) if m['body'] else None)
    x.connect(address=('127.0.0.1', port))
    return x


async def main(args):
    loop = asyncio.get_running_loop()
    alice = client('alice', 'desk', args.password, args.port, loop)
    bob = client('bob', 'phone', args.password, args.port, loop, sm=True)
    await asyncio.wait_for(asyncio.gather(alice.ready, bob.ready), TIMEOUT)
    bob_jid, alice_jid = f"bob@{DOMAIN}", f"alice@{DOMAIN}"
    tag = uuid.uuid4().hex[:8]

    bodies = [f"{tag}-{i:02}" for i in range(15)]
    for b in bodies:
        alice.send_message(mto=bob_jid, mbody=b, mtype='chat')
    for _ in bodies:
        await asyncio.wait_for(bob.inbox.get(), TIMEOUT)
    say("15 messages delivered live")

    got = []
    async for m in bob['xep_0313'].iterate(with_jid=slixmpp.JID(alice_jid), rsm={'max': 5}):
        got.append(m['mam_result']['forwarded']['stanza']['body'])
    mine = [b for b in got if b.startswith(tag)]
    assert mine == bodies, f"forward paging gave {mine}"
    got = []
    async for m in bob['xep_0313'].iterate(with_jid=slixmpp.JID(alice_jid), rsm={'max': 5},
                                           reverse=True, total=15):
        got.append(m['mam_result']['forwarded']['stanza']['body'])
    mine = [b for b in got if b.startswith(tag)]
    # slixmpp 1.8's RSM iterator stops backward paging after the newest page
    # (it stops when first-index + items == count, which holds for that page),
    # so only the newest page is checked backwards.
    assert mine == list(reversed(bodies))[:5], f"reverse paging gave {mine}"
    say("MAM paging: all 15 forward, newest page backward")

    sm = bob['xep_0198']
    await asyncio.wait_for(bob.sm_ready.wait(), TIMEOUT)
    assert sm.sm_id, "stream management was not enabled with resumption"
    say(f"SM enabled, id {sm.sm_id}")
    # Cut the socket: no </stream:stream>, no ack. Whether the server has
    # noticed yet or not, what alice sends next is queued for bob's session.
    bob.transport.abort()
    away = [f"{tag}-away-{i}" for i in range(3)]
    for b in away:
        alice.send_message(mto=bob_jid, mbody=b, mtype='chat')
    # Let alice's messages be routed before bob comes back.
    await alice['xep_0199'].send_ping(DOMAIN, timeout=TIMEOUT)
    bob.connect(address=('127.0.0.1', bob.port))
    await asyncio.wait_for(bob.resumed.wait(), TIMEOUT)
    say("stream resumed")
    received = []
    while len(received) < len(away):
        m = await asyncio.wait_for(bob.inbox.get(), TIMEOUT)
        if m['body'].startswith(f"{tag}-away"):
            received.append(m['body'])
    assert sorted(received) == away, received
    say("messages sent while away arrived after resumption")
    for x in (alice, bob):
        x.disconnect()
    say("OK")


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--password', default='pass')
    try:
        asyncio.run(asyncio.wait_for(main(p.parse_args()), 45))
    except Exception as e:  # noqa: BLE001
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
