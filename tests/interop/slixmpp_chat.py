#!/usr/bin/python3
"""Interop check with slixmpp (Debian package python3-slixmpp).

Logs two users in over STARTTLS (certificate not verified) with a forced SASL
mechanism, sends initial presence, exchanges one chat message each way with
unique bodies, pings the server (XEP-0199) and checks that its disco#info
(XEP-0030) lists urn:xmpp:ping.

Exit status: 0 if everything succeeded; 1 with a message on stderr otherwise
(2 for a usage error, 3 if slixmpp is missing). Hard timeout: 30 s.

The roster is not fetched here: this script checks the core (RFC 6120) path;
tests/interop/slixmpp_im.py covers rosters, subscriptions and carbons.
"""

import argparse
import asyncio
import logging
import ssl
import sys
import uuid

try:
    import slixmpp
    from slixmpp.exceptions import IqError, IqTimeout
except ImportError as e:  # pragma: no cover
    print(f"FAIL: cannot import slixmpp ({e}); install python3-slixmpp "
          "and run with /usr/bin/python3", file=sys.stderr)
    sys.exit(3)

HARD_TIMEOUT = 30.0
STEP_TIMEOUT = 10.0
DOMAIN = 'localhost'


class Failure(Exception):
    pass


def step(msg):
    print(f"[slixmpp_chat] {msg}", flush=True)


def make_client(user, password, port, mech, stock_cb):
    jid = f"{user}@{DOMAIN}/slix-{uuid.uuid4().hex[:8]}"
    x = slixmpp.ClientXMPP(jid, password, sasl_mech=mech)
    x.ssl_context.check_hostname = False  # must come before verify_mode
    x.ssl_context.verify_mode = ssl.CERT_NONE
    if not stock_cb:
        # slixmpp 1.8 knows only the tls-unique channel binding, and with any
        # non-PLUS SCRAM it sends the gs2 flag 'y' ("I support binding, you
        # don't") whenever it has tls-unique data, even though the server
        # offered -PLUS. A server that offers -PLUS (ours: tls-exporter, per
        # XEP-0440) must refuse 'y' as a downgrade (RFC 5802 section 6).
        # Since slixmpp supports none of the advertised binding types, the
        # correct flag is 'n': hide the binding data so slixmpp sends it.
        fm = x['feature_mechanisms']
        default_creds = fm.sasl_callback

        def creds_without_cb(required, optional):
            c = default_creds(required, optional)
            c.pop('channel_binding', None)
            return c
        fm.sasl_callback = creds_without_cb
    x.register_plugin('xep_0030')
    x.register_plugin('xep_0199')
    loop = asyncio.get_running_loop()
    x.ready = loop.create_future()
    x.inbox = asyncio.Queue()

    def fail(why):
        if not x.ready.done():
            x.ready.set_exception(Failure(f"{user}: {why}"))

    async def session_start(_):
        # No get_roster(): this script covers the core path only.
        x.send_presence()
        if not x.ready.done():
            x.ready.set_result(True)

    x.add_event_handler('session_start', session_start)
    x.auth_failures = []
    x.add_event_handler(
        'failed_auth',
        lambda f: x.auth_failures.append(f"{x['feature_mechanisms'].mech.name}: "
                                         f"<{f['condition']}/>"))
    x.add_event_handler(
        'failed_all_auth',
        lambda _: fail(f"SASL authentication failed ({mech or 'auto'}); "
                       f"server failures: {x.auth_failures or 'none'}"))
    x.add_event_handler('connection_failed',
                        lambda e: fail(f"connection failed: {e}"))
    x.add_event_handler('disconnected',
                        lambda r: fail(f"disconnected before session start: {r}"))
    x.add_event_handler('message', lambda m: x.inbox.put_nowait(m))
    # Fixed address: no SRV lookup. STARTTLS is required by default.
    x.connect(address=('127.0.0.1', port))
    return x


async def wait(what, aw, timeout=STEP_TIMEOUT):
    try:
        return await asyncio.wait_for(aw, timeout)
    except asyncio.TimeoutError:
        raise Failure(f"timed out after {timeout:.0f} s waiting for {what}")


async def expect_message(receiver, sender, body, who):
    async def loop():
        while True:
            m = await receiver.inbox.get()
            if m['body'] == body:
                return m
            step(f"{who}: ignoring message {m['body']!r} from {m['from']}")
    m = await wait(f"{who} to receive {body!r}", loop())
    if m['type'] != 'chat':
        raise Failure(f"{who}: message type {m['type']!r}, expected 'chat'")
    if m['from'].full != sender.boundjid.full:
        raise Failure(f"{who}: message from {m['from'].full!r}, "
                      f"expected {sender.boundjid.full!r}")


async def run(args):
    a = make_client(args.user1, args.password, args.port, args.mech, args.stock_cb)
    b = make_client(args.user2, args.password, args.port, args.mech, args.stock_cb)
    clients = [a, b]
    try:
        results = await wait("both session starts",
                             asyncio.gather(a.ready, b.ready,
                                            return_exceptions=True))
        for r in results:
            if isinstance(r, BaseException):
                raise r
        used = a['feature_mechanisms'].mech.name
        step(f"logged in with {used}: {a.boundjid.full}, {b.boundjid.full}")
        if args.mech and used != args.mech:
            raise Failure(f"used {used}, not the requested {args.mech}")

        tag = uuid.uuid4().hex
        # user1 -> user2's full JID. user1's presence went out before this
        # message, so once user2 has it, user1 is available for the bare-JID
        # reply.
        body1 = f"hello from {args.user1} {tag} <&> ✓"
        a.send_message(mto=b.boundjid.full, mbody=body1, mtype='chat')
        await expect_message(b, a, body1, args.user2)
        step(f"{args.user2} got {body1!r} (to full JID)")

        body2 = f"reply from {args.user2} {tag}"
        b.send_message(mto=a.boundjid.bare, mbody=body2, mtype='chat')
        await expect_message(a, b, body2, args.user1)
        step(f"{args.user1} got {body2!r} (to bare JID)")

        # send_ping, not ping(): ping() treats an error reply from the own
        # server as success.
        try:
            r = await wait("ping result",
                           a['xep_0199'].send_ping(slixmpp.JID(DOMAIN),
                                                   timeout=STEP_TIMEOUT))
        except IqError as e:
            raise Failure(f"ping answered with an error: {e.iq}")
        except IqTimeout:
            raise Failure("ping timed out")
        if r['type'] != 'result':
            raise Failure(f"ping answer is not a result: {r}")
        step("ping ok")

        try:
            info = await wait("disco#info result",
                              a['xep_0030'].get_info(jid=DOMAIN,
                                                     timeout=STEP_TIMEOUT))
        except IqError as e:
            raise Failure(f"disco#info answered with an error: {e.iq}")
        except IqTimeout:
            raise Failure("disco#info timed out")
        features = set(info['disco_info']['features'])
        if 'urn:xmpp:ping' not in features:
            raise Failure(f"urn:xmpp:ping missing from disco#info features "
                          f"{sorted(features)}")
        step(f"disco#info ok ({len(features)} features, urn:xmpp:ping present)")
    finally:
        # Take the futures first: slixmpp replaces x.disconnected with a new
        # one each time it fires.
        gone = [x.disconnected for x in clients]
        for x in clients:
            x.disconnect()
        for x, fut in zip(clients, gone):
            try:
                await asyncio.wait_for(fut, 5)
            except asyncio.TimeoutError:
                step(f"warning: {x.boundjid.bare} did not disconnect cleanly")

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--user1', default='alice')
    p.add_argument('--user2', default='bob')
    p.add_argument('--password', default='pass')
    p.add_argument('--mech', default='SCRAM-SHA-256',
                   help="SASL mechanism to force, e.g. SCRAM-SHA-1, PLAIN; "
                        "'auto' lets slixmpp pick")
    p.add_argument('--stock-cb', action='store_true',
                   help="keep slixmpp's own channel-binding behaviour (gs2 "
                        "flag 'y' for non-PLUS SCRAM; see make_client)")
    p.add_argument('-v', '--verbose', action='store_true',
                   help="slixmpp debug log (all XML) on stderr")
    args = p.parse_args()
    if args.mech == 'auto':
        args.mech = None
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')

    async def guarded():
        try:
            await asyncio.wait_for(run(args), HARD_TIMEOUT)
        except asyncio.TimeoutError:
            raise Failure(f"hard timeout of {HARD_TIMEOUT:.0f} s reached")

    try:
        asyncio.run(guarded())
    except Failure as e:
        print(f"FAIL [{args.mech or 'auto'}]: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # anything unexpected is a failure too
        print(f"FAIL [{args.mech or 'auto'}]: unexpected {type(e).__name__}: {e}",
              file=sys.stderr)
        return 1
    print(f"OK [{args.mech or 'auto'}]", flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
