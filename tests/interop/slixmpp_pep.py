#!/usr/bin/python3
"""XEP-0163 PEP interop check with slixmpp's own plugins (Debian package
python3-slixmpp 1.8): xep_0060, xep_0163, xep_0115, xep_0223, xep_0084,
xep_0048/xep_0049.

alice and bob subscribe to each other. bob announces, through slixmpp's
XEP-0115 caps, interest ('+notify') in the OMEMO device lists and bundles
(urn:xmpp:omemo:2 and Conversations' legacy axolotl nodes) and in avatar
metadata; the server must query and verify those caps itself. alice
publishes her device lists and a bundle with publish-options
access_model=open, bob receives each as a PEP event and fetches the bundle;
alice stores bookmarks with XEP-0223 (whitelist: bob is refused), publishes
a native XEP-0402 bookmark and reads it back through XEP-0049 private XML
(the server's '#compat'), and publishes an XEP-0084 avatar that bob is told
of and that the server copies into alice's vCard (XEP-0398).

Prints one line per checked step; exit status 0 on success, 1 with the
reason on stderr otherwise (3 if slixmpp is missing).
"""

import argparse
import asyncio
import base64
import hashlib
import ssl
import sys
import xml.etree.ElementTree as ET

try:
    import slixmpp
    from slixmpp.plugins.xep_0048.stanza import Bookmarks
    from slixmpp.exceptions import IqError
except ImportError as e:  # pragma: no cover
    print(f"FAIL: cannot import slixmpp ({e}); install python3-slixmpp", file=sys.stderr)
    sys.exit(3)

DOMAIN = 'localhost'
TIMEOUT = 15.0
PUBOPTS = 'http://jabber.org/protocol/pubsub#publish-options'
DEVICES = 'urn:xmpp:omemo:2:devices'
BUNDLES = 'urn:xmpp:omemo:2:bundles'
LEGACY_LIST = 'eu.siacs.conversations.axolotl.devicelist'
LEGACY_BUNDLE = 'eu.siacs.conversations.axolotl.bundles:4223'


def say(msg):
    print(f"[slixmpp_pep] {msg}", flush=True)


def client(user, password, port, loop, interests=()):
    x = slixmpp.ClientXMPP(f"{user}@{DOMAIN}/slix", password)
    x.ssl_context.check_hostname = False
    x.ssl_context.verify_mode = ssl.CERT_NONE
    for p in ('xep_0030', 'xep_0004', 'xep_0060', 'xep_0115', 'xep_0163',
              'xep_0223', 'xep_0084', 'xep_0048', 'xep_0049', 'xep_0054',
              'xep_0199'):
        x.register_plugin(p)
    x.ready = loop.create_future()
    x.events = asyncio.Queue()
    x.roster_changed = asyncio.Event()

    async def start(_):
        await x.get_roster()
        for ns in interests:
            x['xep_0030'].add_feature(f"{ns}+notify")
        # Announces the new caps with the initial presence.
        await x['xep_0115'].update_caps(broadcast=False)
        x.send_presence()
        if not x.ready.done():
            x.ready.set_result(True)

    def failed(_):
        if not x.ready.done():
            x.ready.set_exception(RuntimeError(f"{user}: auth failed"))

    x.add_event_handler('session_start', start)
    x.add_event_handler('failed_all_auth', failed)
    x.add_event_handler('roster_update', lambda _: x.roster_changed.set())
    x.add_event_handler('pubsub_publish', lambda m: x.events.put_nowait(m))
    x.add_event_handler('avatar_metadata_publish', lambda m: x.events.put_nowait(m))
    x.connect(address=('127.0.0.1', port))
    return x


async def until(clients, cond, what):
    """Waits until `cond()` holds, checking it again after each roster
    push one of `clients` receives (no polling)."""
    async def wait():
        while not cond():
            waits = [asyncio.ensure_future(c.roster_changed.wait()) for c in clients]
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
            for c in clients:
                c.roster_changed.clear()
    try:
        await asyncio.wait_for(wait(), TIMEOUT)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def event(x, node, what):
    """The next PEP event for `node` (events of other nodes are skipped)."""
    while True:
        m = await asyncio.wait_for(x.events.get(), TIMEOUT)
        items = m['pubsub_event']['items']
        if items['node'] == node:
            return items
        say(f"({what}: skipped an event of {items['node']})")


def options(**fields):
    form = slixmpp.plugins.xep_0004.stanza.Form()
    form['type'] = 'submit'
    form.add_field(var='FORM_TYPE', ftype='hidden', value=PUBOPTS)
    for var, value in fields.items():
        form.add_field(var=f"pubsub#{var}", value=value)
    return form


async def main(args):
    loop = asyncio.get_running_loop()
    alice = client('alice', args.password, args.port, loop)
    bob = client('bob', args.password, args.port, loop,
                 interests=(DEVICES, BUNDLES, LEGACY_LIST))
    await asyncio.wait_for(asyncio.gather(alice.ready, bob.ready), TIMEOUT)
    say("two sessions online")

    alice_jid = slixmpp.JID(f"alice@{DOMAIN}")
    bob_jid = slixmpp.JID(f"bob@{DOMAIN}")
    alice.send_presence_subscription(pto=bob_jid)
    await until((alice, bob),
                lambda: alice.client_roster[bob_jid]['subscription'] == 'both'
                and bob.client_roster[alice_jid]['subscription'] == 'both',
                "subscription 'both'")
    say("subscriptions: both/both")

    info = await alice['xep_0030'].get_info(jid=alice_jid, timeout=TIMEOUT)
    identities = info['disco_info']['identities']
    assert ('pubsub', 'pep', None, None) in identities, identities
    feats = info['disco_info']['features']
    for f in ('http://jabber.org/protocol/pubsub#publish-options',
              'http://jabber.org/protocol/pubsub#auto-create',
              'urn:xmpp:bookmarks:1#compat'):
        assert f in feats, (f, feats)
    say("account disco: pubsub/pep with publish-options")

    # OMEMO device list (urn:xmpp:omemo:2), publish-options access open.
    devices = ET.fromstring(
        "<devices xmlns='urn:xmpp:omemo:2'><device id='4223' label='slixmpp'/></devices>")
    r = await alice['xep_0060'].publish(None, DEVICES, id='current', payload=devices,
                                        options=options(access_model='open'),
                                        timeout=TIMEOUT)
    assert r['pubsub']['publish']['item']['id'] == 'current', r
    items = await event(bob, DEVICES, 'device list')
    got = items['item']['payload']
    assert got.tag == '{urn:xmpp:omemo:2}devices', ET.tostring(got)
    assert got.find('{urn:xmpp:omemo:2}device').get('id') == '4223', ET.tostring(got)
    say("device list: bob got the event")

    bundle = ET.fromstring(
        "<bundle xmlns='urn:xmpp:omemo:2'><spk id='0'>c3Br</spk><spks>c3Brcw==</spks>"
        "<ik>aWs=</ik><prekeys><pk id='1'>cGsx</pk><pk id='2'>cGsy</pk></prekeys></bundle>")
    await alice['xep_0060'].publish(None, BUNDLES, id='4223', payload=bundle,
                                    options=options(access_model='open', max_items='max'),
                                    timeout=TIMEOUT)
    items = await event(bob, BUNDLES, 'bundle')
    assert items['item']['id'] == '4223', items
    fetched = await bob['xep_0060'].get_item(alice_jid, BUNDLES, '4223', timeout=TIMEOUT)
    payload = fetched['pubsub']['items']['item']['payload']
    assert payload.find('{urn:xmpp:omemo:2}ik').text == 'aWs=', ET.tostring(payload)
    say("bundle: bob got the event and fetched it")

    # The legacy nodes Conversations still uses.
    legacy = ET.fromstring(
        "<list xmlns='eu.siacs.conversations.axolotl'><device id='4223'/></list>")
    await alice['xep_0060'].publish(None, LEGACY_LIST, id='current', payload=legacy,
                                    options=options(access_model='open'), timeout=TIMEOUT)
    items = await event(bob, LEGACY_LIST, 'legacy device list')
    assert items['item']['payload'].find(
        '{eu.siacs.conversations.axolotl}device').get('id') == '4223'
    legacy_bundle = ET.fromstring(
        "<bundle xmlns='eu.siacs.conversations.axolotl'><identityKey>aWs=</identityKey></bundle>")
    await alice['xep_0060'].publish(None, LEGACY_BUNDLE, id='current', payload=legacy_bundle,
                                    options=options(access_model='open'), timeout=TIMEOUT)
    fetched = await bob['xep_0060'].get_items(alice_jid, LEGACY_BUNDLE, max_items=1,
                                              timeout=TIMEOUT)
    assert fetched['pubsub']['items']['item']['id'] == 'current', fetched
    say("legacy axolotl nodes: event and fetch")

    # A precondition that does not match: conflict.
    try:
        await alice['xep_0060'].publish(None, DEVICES, id='current', payload=devices,
                                        options=options(access_model='whitelist'),
                                        timeout=TIMEOUT)
        raise AssertionError("publish-options mismatch was accepted")
    except IqError as e:
        assert e.condition == 'conflict', e.iq
    say("publish-options mismatch: conflict")

    # XEP-0223 private storage through slixmpp's plugin (whitelist).
    bm = Bookmarks()
    bm.add_conference('lab@conference.localhost', 'Alice', name='Lab', autojoin=True)
    await alice['xep_0048'].set_bookmarks(bm, method='xep_0223', timeout=TIMEOUT)
    r = await alice['xep_0048'].get_bookmarks(method='xep_0223', timeout=TIMEOUT)
    confs = r['pubsub']['items']['item']['payload'].findall('{storage:bookmarks}conference')
    assert [c.get('jid') for c in confs] == ['lab@conference.localhost'], r
    try:
        await bob['xep_0060'].get_items(alice_jid, 'storage:bookmarks', timeout=TIMEOUT)
        raise AssertionError("bob read alice's private bookmarks")
    except IqError as e:
        assert e.condition == 'not-allowed', e.iq
    say("xep_0223: stored, read back, refused to bob")

    # XEP-0402 native bookmark, read back as XEP-0048 private XML.
    conf = ET.fromstring(
        "<conference xmlns='urn:xmpp:bookmarks:1' name='Council' autojoin='true'><nick>Al</nick></conference>")
    await alice['xep_0060'].publish(
        None, 'urn:xmpp:bookmarks:1', id='council@conference.localhost', payload=conf,
        options=options(persist_items='true', max_items='max',
                        send_last_published_item='never', access_model='whitelist'),
        timeout=TIMEOUT)
    r = await alice['xep_0048'].get_bookmarks(method='xep_0049', timeout=TIMEOUT)
    storage = r['private']['bookmarks']
    confs = [(c['jid'], c['name'], c['nick'], c['autojoin']) for c in storage['conferences']]
    assert confs == [(slixmpp.JID('council@conference.localhost'), 'Council', 'Al', True)], confs
    say("xep_0402 bookmark read through xep_0049 (#compat)")

    # XEP-0084 avatar: bob is told, the vCard gets the photo.
    bob['xep_0030'].add_feature('urn:xmpp:avatar:metadata+notify')
    await bob['xep_0115'].update_caps(broadcast=True)
    png = bytes(range(256))
    await alice['xep_0084'].publish_avatar(png, timeout=TIMEOUT)
    avatar_id = hashlib.sha1(png).hexdigest()
    await alice['xep_0084'].publish_avatar_metadata(
        {'id': avatar_id, 'type': 'image/png', 'bytes': len(png)}, timeout=TIMEOUT)
    items = await event(bob, 'urn:xmpp:avatar:metadata', 'avatar metadata')
    assert items['item']['id'] == avatar_id, items
    vcard = await alice['xep_0054'].get_vcard(alice_jid, timeout=TIMEOUT)
    binval = vcard['vcard_temp']['PHOTO']['BINVAL']
    assert binval == png, (len(binval), binval[:10])
    say("avatar: bob got the metadata, the vCard has the photo")

    for x in (alice, bob):
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
