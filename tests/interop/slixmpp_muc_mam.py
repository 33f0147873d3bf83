#!/usr/bin/python3
"""XEP-0313 room archive interop check with slixmpp's xep_0045, xep_0359
and xep_0313 plugins (Debian package python3-slixmpp).

Alice creates a room and bob joins; they send ten messages, every live copy
carrying the room's XEP-0359 stanza-id. Carol, who never entered the
(public, open) room, then reads the room's archive with slixmpp's MAM
iterator in pages of four and finds all ten messages in order, from the
senders' occupant JIDs, under the ids the live copies carried; a query
`with` Bob's occupant JID finds his three.

Prints one line per checked step; exit status 0 on success, 1 with the
reason on stderr otherwise (3 if slixmpp is missing).
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
ROOM = 'log@conference.localhost'
TIMEOUT = 15.0


def say(msg):
    print(f"[slixmpp_muc_mam] {msg}", flush=True)


def client(user, password, port, loop):
    x = slixmpp.ClientXMPP(f"{user}@{DOMAIN}/slix", password)
    x.ssl_context.check_hostname = False
    x.ssl_context.verify_mode = ssl.CERT_NONE
    for p in ('xep_0030', 'xep_0004', 'xep_0045', 'xep_0059', 'xep_0313', 'xep_0359'):
        x.register_plugin(p)
    x.ready = loop.create_future()
    x.messages = asyncio.Queue()

    async def start(_):
        x.send_presence()
        if not x.ready.done():
            x.ready.set_result(True)

    def failed(_):
        if not x.ready.done():
            x.ready.set_exception(RuntimeError(f"{user}: auth failed"))

    x.add_event_handler('session_start', start)
    x.add_event_handler('failed_all_auth', failed)
    x.add_event_handler('groupchat_message',
                        lambda m: x.messages.put_nowait(m) if m['body'] else None)
    x.connect(address=('127.0.0.1', port))
    return x


async def main(args):
    loop = asyncio.get_running_loop()
    alice, bob, carol = (client(u, args.password, args.port, loop)
                         for u in ('alice', 'bob', 'carol'))
    await asyncio.wait_for(asyncio.gather(alice.ready, bob.ready, carol.ready), TIMEOUT)
    say("three sessions online")

    muc = alice.plugin['xep_0045']
    await muc.join_muc_wait(ROOM, 'Alice', timeout=TIMEOUT)
    form = alice.plugin['xep_0004'].make_form(ftype='submit')
    await muc.set_room_config(ROOM, form, timeout=TIMEOUT)
    await bob.plugin['xep_0045'].join_muc_wait(ROOM, 'Bob', timeout=TIMEOUT)
    say("alice created the room, bob joined")

    info = await carol.plugin['xep_0030'].get_info(jid=ROOM, timeout=TIMEOUT)
    features = info['disco_info']['features']
    assert 'urn:xmpp:mam:2' in features, features
    say("the room advertises urn:xmpp:mam:2")

    tag = uuid.uuid4().hex[:8]
    sent = [('Bob' if i in (2, 5, 8) else 'Alice', f"{tag}-{i}") for i in range(10)]
    for nick, body in sent:
        (bob if nick == 'Bob' else alice).send_message(mto=ROOM, mbody=body, mtype='groupchat')
    live = {}
    for x in (alice, bob):
        ids = []
        for nick, body in sent:
            m = await asyncio.wait_for(x.messages.get(), TIMEOUT)
            assert (m['mucnick'], m['body']) == (nick, body), (m['mucnick'], m['body'])
            sid = m['stanza_id']
            assert sid['by'] == ROOM and sid['id'], m
            ids.append(sid['id'])
        live[x.boundjid.bare] = ids
    assert live['alice@localhost'] == live['bob@localhost'], live
    assert len(set(live['alice@localhost'])) == 10
    say("ten messages live, each with the room's stanza-id, the same for everyone")

    got = []
    async for m in carol['xep_0313'].iterate(jid=slixmpp.JID(ROOM), rsm={'max': 4}):
        fwd = m['mam_result']['forwarded']['stanza']
        got.append((fwd['from'].resource, fwd['body'], m['mam_result']['id']))
    expected = [(nick, body, sid) for (nick, body), sid in zip(sent, live['alice@localhost'])]
    assert got == expected, got
    say("carol paged through the archive: all 10 in order, ids as live")

    got = []
    async for m in carol['xep_0313'].iterate(jid=slixmpp.JID(ROOM),
                                             with_jid=slixmpp.JID(f"{ROOM}/Bob")):
        got.append(m['mam_result']['forwarded']['stanza']['body'])
    assert got == [b for n, b in sent if n == 'Bob'], got
    say("with Bob's occupant JID: his 3 messages")

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
