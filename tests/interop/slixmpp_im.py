#!/usr/bin/python3
"""IM interop check with slixmpp (Debian package python3-slixmpp).

Three sessions: alice on two resources with message carbons (XEP-0280)
enabled, bob on one. Everyone fetches the roster and sends initial presence
as a real client does. Then:
  1. alice subscribes to bob; slixmpp's defaults (auto_authorize,
     auto_subscribe) make bob accept and subscribe back, so both rosters
     must reach subscription 'both' (RFC 6121 section 3);
  2. each side must see the other's presence (section 4);
  3. bob writes to alice's first resource: her second resource must get a
     'received' carbon; alice answers from the first: the second must get a
     'sent' carbon.
Exit status 0 when all of that happened within the timeout, 1 otherwise
(3 if slixmpp is missing). Stock slixmpp, no workarounds.
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
    print(f"[slixmpp_im] {msg}", flush=True)


def client(user, resource, password, port, loop):
    x = slixmpp.ClientXMPP(f"{user}@{DOMAIN}/{resource}", password)
    x.ssl_context.check_hostname = False
    x.ssl_context.verify_mode = ssl.CERT_NONE
    for p in ('xep_0030', 'xep_0199', 'xep_0280'):
        x.register_plugin(p)
    x.ready = loop.create_future()
    x.inbox = asyncio.Queue()
    x.carbons = asyncio.Queue()

    async def start(_):
        await x.get_roster()
        x.send_presence()
        if not x.ready.done():
            x.ready.set_result(True)

    def failed(_):
        if not x.ready.done():
            x.ready.set_exception(RuntimeError(f"{user}/{resource}: auth failed"))

    x.add_event_handler('session_start', start)
    x.add_event_handler('failed_all_auth', failed)
    x.add_event_handler('message', lambda m: x.inbox.put_nowait(m) if m['body'] else None)
    x.add_event_handler('carbon_received', lambda m: x.carbons.put_nowait(('received', m)))
    x.add_event_handler('carbon_sent', lambda m: x.carbons.put_nowait(('sent', m)))
    for ev in CHANGE_EVENTS:
        x.add_event_handler(ev, lambda _: CHANGED.set())
    x.connect(address=('127.0.0.1', port))
    return x


# Set whenever a roster or presence change reaches either client; until()
# re-checks its condition on each change instead of polling.
CHANGED = asyncio.Event()
CHANGE_EVENTS = ('roster_update', 'changed_subscription', 'changed_status',
                 'presence_available', 'presence_unavailable', 'presence_subscribed')


async def until(cond, what):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        CHANGED.clear()
        if cond():
            return
        left = deadline - loop.time()
        if left <= 0:
            raise RuntimeError(f"timed out waiting for {what}")
        try:
            await asyncio.wait_for(CHANGED.wait(), left)
        except asyncio.TimeoutError:
            pass


async def main(args):
    loop = asyncio.get_running_loop()
    # With --port2 (a cluster: two connection managers), alice's second
    # resource and bob connect to the other one.
    port2 = args.port2 or args.port
    a1 = client(args.alice, 'one', args.password, args.port, loop)
    a2 = client(args.alice, 'two', args.password, port2, loop)
    b = client(args.bob, 'desk', args.password, port2, loop)
    await asyncio.wait_for(asyncio.gather(a1.ready, a2.ready, b.ready), TIMEOUT)
    say("three sessions online")
    for x in (a1, a2):
        await x['xep_0280'].enable()
    say("carbons enabled on alice's resources")

    bob, alice = f"{args.bob}@{DOMAIN}", f"{args.alice}@{DOMAIN}"
    a1.send_presence_subscription(pto=bob)
    await until(lambda: a1.client_roster[bob]['subscription'] == 'both'
                and b.client_roster[alice]['subscription'] == 'both',
                "subscription 'both' on both rosters")
    say("subscriptions: both/both")
    await until(lambda: len(a1.client_roster.presence(bob)) > 0, "bob's presence at alice")
    await until(lambda: len(b.client_roster.presence(alice)) > 0, "alice's presence at bob")
    say(f"presence both ways: alice sees {list(a1.client_roster.presence(bob))}, "
        f"bob sees {sorted(b.client_roster.presence(alice))}")

    body = f"hello alice {uuid.uuid4().hex}"
    b.send_message(mto=f"{alice}/one", mbody=body, mtype='chat')
    m = await asyncio.wait_for(a1.inbox.get(), TIMEOUT)
    assert m['body'] == body, m
    kind, c = await asyncio.wait_for(a2.carbons.get(), TIMEOUT)
    fwd = c['carbon_received']
    assert kind == 'received' and fwd['body'] == body, (kind, c)
    say("received carbon at alice/two")

    reply = f"hi bob {uuid.uuid4().hex}"
    a1.send_message(mto=f"{bob}/desk", mbody=reply, mtype='chat')
    m = await asyncio.wait_for(b.inbox.get(), TIMEOUT)
    assert m['body'] == reply, m
    kind, c = await asyncio.wait_for(a2.carbons.get(), TIMEOUT)
    assert kind == 'sent' and c['carbon_sent']['body'] == reply, (kind, c)
    say("sent carbon at alice/two")

    for x in (a1, a2, b):
        x.disconnect()
    say("OK")


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--port2', type=int, default=0)
    p.add_argument('--alice', default='alice')
    p.add_argument('--bob', default='bob')
    p.add_argument('--password', default='pass')
    try:
        asyncio.run(asyncio.wait_for(main(p.parse_args()), 40))
    except Exception as e:  # noqa: BLE001
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
