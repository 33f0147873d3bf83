#!/usr/bin/python3
"""XEP-0045 and XEP-0313 room archive interop check with slixmpp's
xep_0045, xep_0359 and xep_0313 plugins (Debian package python3-slixmpp).

Three users: alice creates a room (status 201), accepts the instant
configuration, bob and carol join; everyone sees the others, alice and bob
chat and everyone gets both messages with the right nick; alice kicks carol,
who gets her own unavailable presence with 110 and 307, while alice and bob
see carol leave with 307. Every live groupchat copy carries the room's
XEP-0359 stanza-id (the same for everyone); carol, no longer in the (public,
open) room, reads its archive with slixmpp's MAM iterator one message a page
and finds both messages in order under those ids, and a query `with` Bob's
occupant JID finds his.

Prints one line per checked step; exit status 0 on success, 1 with the
reason on stderr otherwise (3 if slixmpp is missing).
"""

import argparse
import asyncio
import ssl
import sys

try:
    import slixmpp
except ImportError as e:  # pragma: no cover
    print(f"FAIL: cannot import slixmpp ({e}); install python3-slixmpp", file=sys.stderr)
    sys.exit(3)

DOMAIN = 'localhost'
ROOM = 'lab@conference.localhost'
TIMEOUT = 15.0


def say(msg):
    print(f"[slixmpp_muc] {msg}", flush=True)


def client(user, password, port, loop):
    x = slixmpp.ClientXMPP(f"{user}@{DOMAIN}/slix", password)
    x.ssl_context.check_hostname = False
    x.ssl_context.verify_mode = ssl.CERT_NONE
    for p in ('xep_0030', 'xep_0004', 'xep_0045', 'xep_0059', 'xep_0199', 'xep_0313',
              'xep_0359'):
        x.register_plugin(p)
    x.ready = loop.create_future()
    x.messages = asyncio.Queue()
    x.presences = asyncio.Queue()

    async def start(_):
        x.send_presence()
        if not x.ready.done():
            x.ready.set_result(True)

    def failed(_):
        if not x.ready.done():
            x.ready.set_exception(RuntimeError(f"{user}: auth failed"))

    x.add_event_handler('session_start', start)
    x.add_event_handler('failed_all_auth', failed)
    x.add_event_handler('groupchat_message', lambda m: x.messages.put_nowait(m))
    x.add_event_handler(f"muc::{ROOM}::presence", lambda p: x.presences.put_nowait(p))
    x.connect(address=('127.0.0.1', port))
    return x


async def next_presence(x, pred, what):
    while True:
        p = await asyncio.wait_for(x.presences.get(), TIMEOUT)
        if pred(p):
            return p
        say(f"({what}: skipped presence from {p['from']})")


async def main(args):
    loop = asyncio.get_running_loop()
    alice, bob, carol = (client(u, args.password, args.port, loop)
                         for u in ('alice', 'bob', 'carol'))
    await asyncio.wait_for(asyncio.gather(alice.ready, bob.ready, carol.ready), TIMEOUT)
    say("three sessions online")

    muc = alice.plugin['xep_0045']
    pres, _subject, occupants, _history = await muc.join_muc_wait(ROOM, 'Alice', timeout=TIMEOUT)
    codes = pres['muc']['status_codes']
    assert {110, 201} <= codes, codes
    assert pres['muc']['affiliation'] == 'owner' and pres['muc']['role'] == 'moderator', pres
    # slixmpp counts its own presence among the occupants.
    assert [o['from'].resource for o in occupants] == ['Alice'], occupants
    say("alice created the room (110, 201, owner/moderator)")
    form = alice.plugin['xep_0004'].make_form(ftype='submit')
    await muc.set_room_config(ROOM, form, timeout=TIMEOUT)
    say("instant configuration accepted")

    pres, _s, occupants, _h = await bob.plugin['xep_0045'].join_muc_wait(ROOM, 'Bob', timeout=TIMEOUT)
    assert 110 in pres['muc']['status_codes'] and pres['muc']['role'] == 'participant', pres
    assert [o['from'].resource for o in occupants] == ['Alice', 'Bob'], occupants
    pres, _s, occupants, _h = await carol.plugin['xep_0045'].join_muc_wait(ROOM, 'Carol', timeout=TIMEOUT)
    assert [o['from'].resource for o in occupants] == ['Alice', 'Bob', 'Carol'], occupants
    await next_presence(alice, lambda p: p['from'].resource == 'Carol', 'carol joins')
    await next_presence(bob, lambda p: p['from'].resource == 'Carol', 'carol joins')
    assert sorted(alice.plugin['xep_0045'].get_roster(ROOM)) == ['Alice', 'Bob', 'Carol']
    # Alice, a moderator in a semi-anonymous room, sees real JIDs; Bob does not.
    assert str(alice.plugin['xep_0045'].get_jid_property(ROOM, 'Carol', 'jid')) == 'carol@localhost/slix'
    assert not bob.plugin['xep_0045'].get_jid_property(ROOM, 'Carol', 'jid')
    say("bob and carol joined; rosters and real JIDs as expected")

    info = await carol.plugin['xep_0030'].get_info(jid=ROOM, timeout=TIMEOUT)
    features = info['disco_info']['features']
    assert {'urn:xmpp:mam:2', 'urn:xmpp:sid:0'} <= set(features), features
    say("the room advertises urn:xmpp:mam:2 and urn:xmpp:sid:0")

    # Bob answers once he has read alice's message, as people do: the room
    # orders messages as they reach it, and two senders' messages may take
    # different paths there (in a cluster, through different session nodes).
    alice.send_message(mto=ROOM, mbody='hello coven', mtype='groupchat')
    seen_by_bob = await asyncio.wait_for(bob.messages.get(), TIMEOUT)
    bob.send_message(mto=ROOM, mbody='hello alice', mtype='groupchat')
    ids = set()
    for x in (alice, bob, carol):
        got = []
        for i in range(2):
            if x is bob and i == 0:
                m = seen_by_bob
            else:
                m = await asyncio.wait_for(x.messages.get(), TIMEOUT)
            assert m['stanza_id']['by'] == ROOM, m
            got.append((m['mucnick'], m['body'], m['stanza_id']['id']))
        ids.add(tuple(got))
        assert [g[:2] for g in got] == [('Alice', 'hello coven'), ('Bob', 'hello alice')], got
    assert len(ids) == 1, ids
    live = ids.pop()
    say("groupchat: everyone got both messages in order, with the same stanza-ids")

    await muc.set_role(ROOM, 'Carol', 'none', reason='out', timeout=TIMEOUT)
    p = await next_presence(carol, lambda p: p['type'] == 'unavailable', 'carol kicked')
    assert {110, 307} <= p['muc']['status_codes'], p
    for x in (alice, bob):
        p = await next_presence(x, lambda p: p['type'] == 'unavailable', 'carol leaves')
        assert p['from'].resource == 'Carol' and 307 in p['muc']['status_codes'], p
        assert 110 not in p['muc']['status_codes'], p
    assert sorted(alice.plugin['xep_0045'].get_roster(ROOM)) == ['Alice', 'Bob']
    say("kick: carol got 110+307, alice and bob saw 307")

    got = []
    async for m in carol['xep_0313'].iterate(jid=slixmpp.JID(ROOM), rsm={'max': 1}):
        fwd = m['mam_result']['forwarded']['stanza']
        got.append((fwd['from'].resource, fwd['body'], m['mam_result']['id']))
    assert tuple(got) == live, got
    got = []
    async for m in carol['xep_0313'].iterate(jid=slixmpp.JID(ROOM),
                                             with_jid=slixmpp.JID(f"{ROOM}/Bob")):
        got.append(m['mam_result']['forwarded']['stanza']['body'])
    assert got == ['hello alice'], got
    say("archive: carol paged through both messages, ids as live; with Bob: his")

    for x in (alice, bob, carol):
        x.disconnect()
    say("OK")


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--password', default='pass')
    try:
        asyncio.run(asyncio.wait_for(main(p.parse_args()), 40))
    except Exception as e:  # noqa: BLE001
        print(f"FAIL: {type(e).__name__}: {e!r}", file=sys.stderr)
        sys.exit(1)
