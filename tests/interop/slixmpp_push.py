#!/usr/bin/python3
"""XEP-0357 push notification interop check with stock slixmpp (Debian's
python3-slixmpp 1.8.3, which has no xep_0357 plugin: the <enable/> is built
with slixmpp's Iq and its XEP-0004 form plugin, as an application would).

  1. alice checks that her account advertises urn:xmpp:push:0 (XEP-0030 to
     her bare JID, section 4.1) and enables push to carol/appserver, a
     second slixmpp client acting as the app server, with a publish-options
     form carrying a secret (section 5);
  2. alice disconnects; bob writes to her; carol must receive the pubsub
     publish of a <notification/> for alice's node with the summary form and
     alice's publish options (section 7), and answers it with a result;
  3. alice logs in again and gets bob's message from offline storage, then
     disables push (section 6).
Exit 0 on success, 1 otherwise (3 if slixmpp is missing).
"""

import argparse
import asyncio
import ssl
import sys
import uuid
import xml.etree.ElementTree as ET

try:
    import slixmpp
    from slixmpp.xmlstream.handler import Callback
    from slixmpp.xmlstream.matcher import MatchXPath
except ImportError as e:  # pragma: no cover
    print(f"FAIL: cannot import slixmpp ({e}); install python3-slixmpp", file=sys.stderr)
    sys.exit(3)

DOMAIN = 'localhost'
TIMEOUT = 15.0
PUSH = 'urn:xmpp:push:0'
PUBSUB = 'http://jabber.org/protocol/pubsub'
XDATA = 'jabber:x:data'


def say(msg):
    print(f"[slixmpp_push] {msg}", flush=True)


def client(user, resource, password, port, loop):
    x = slixmpp.ClientXMPP(f"{user}@{DOMAIN}/{resource}", password)
    x.ssl_context.check_hostname = False
    x.ssl_context.verify_mode = ssl.CERT_NONE
    for p in ('xep_0004', 'xep_0030', 'xep_0199'):
        x.register_plugin(p)
    x.ready = loop.create_future()
    x.gone = asyncio.Event()
    x.inbox = asyncio.Queue()
    x.port = port

    async def start(_):
        await x.get_roster()
        x.send_presence()
        if not x.ready.done():
            x.ready.set_result(True)

    x.add_event_handler('session_start', start)
    x.add_event_handler('disconnected', lambda _: x.gone.set())
    x.add_event_handler('message', lambda m: x.inbox.put_nowait(m) if m['body'] else None)
    x.connect(address=('127.0.0.1', port))
    return x


def form_values(x):
    """{var: value} of a jabber:x:data element."""
    out = {}
    for f in x.findall(f'{{{XDATA}}}field'):
        v = f.find(f'{{{XDATA}}}value')
        out[f.get('var')] = v.text if v is not None else None
    return out


async def main(args):
    loop = asyncio.get_running_loop()
    alice = client('alice', 'phone', args.password, args.port, loop)
    bob = client('bob', 'desk', args.password, args.port, loop)
    carol = client('carol', 'appserver', args.password, args.port, loop)
    await asyncio.wait_for(asyncio.gather(alice.ready, bob.ready, carol.ready), TIMEOUT)
    node = f"node-{uuid.uuid4().hex[:8]}"
    secret = uuid.uuid4().hex
    app_jid = f"carol@{DOMAIN}/appserver"

    # The app server: every pubsub publish request is a notification.
    notifications = asyncio.Queue()

    def on_publish(iq):
        notifications.put_nowait(iq)
        iq.reply(clear=True).send()

    carol.register_handler(Callback(
        'push notifications',
        MatchXPath(f'{{jabber:client}}iq/{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish'),
        on_publish))

    info = await alice['xep_0030'].get_info(jid=f"alice@{DOMAIN}", timeout=TIMEOUT)
    features = info['disco_info']['features']
    assert PUSH in features, f"no {PUSH} in the account's features: {features}"
    say("account advertises urn:xmpp:push:0")

    iq = alice.Iq()
    iq['type'] = 'set'
    enable = ET.Element(f'{{{PUSH}}}enable', {'jid': app_jid, 'node': node})
    form = alice['xep_0004'].make_form(ftype='submit')
    form.add_field(var='FORM_TYPE', ftype='hidden',
                   value='http://jabber.org/protocol/pubsub#publish-options')
    form.add_field(var='secret', value=secret)
    enable.append(form.xml)
    iq.append(enable)
    result = await iq.send(timeout=TIMEOUT)
    assert result['type'] == 'result', result
    say("push enabled")

    alice.disconnect()
    await asyncio.wait_for(alice.gone.wait(), TIMEOUT)
    say("alice disconnected")
    body = f"wake up {uuid.uuid4().hex[:6]}"
    bob.send_message(mto=f"alice@{DOMAIN}", mbody=body, mtype='chat')

    n = await asyncio.wait_for(notifications.get(), TIMEOUT)
    assert n['from'] == DOMAIN, f"notification from {n['from']}"
    pubsub = n.xml.find(f'{{{PUBSUB}}}pubsub')
    publish = pubsub.find(f'{{{PUBSUB}}}publish')
    assert publish.get('node') == node, ET.tostring(n.xml)
    summary = publish.find(f'{{{PUBSUB}}}item/{{{PUSH}}}notification/{{{XDATA}}}x')
    values = form_values(summary)
    assert values.get('FORM_TYPE') == 'urn:xmpp:push:summary', values
    assert values.get('message-count') == '1', values
    assert 'last-message-body' not in values, "the body must not leave the server by default"
    options = pubsub.find(f'{{{PUBSUB}}}publish-options/{{{XDATA}}}x')
    assert options is not None, ET.tostring(n.xml)
    assert form_values(options).get('secret') == secret, form_values(options)
    say("notification received with the summary and the publish options")

    alice.ready = loop.create_future()
    alice.connect(address=('127.0.0.1', alice.port))
    await asyncio.wait_for(alice.ready, TIMEOUT)
    m = await asyncio.wait_for(alice.inbox.get(), TIMEOUT)
    assert m['body'] == body, m
    say("offline message delivered after login")

    iq = alice.Iq()
    iq['type'] = 'set'
    iq.append(ET.Element(f'{{{PUSH}}}disable', {'jid': app_jid, 'node': node}))
    result = await iq.send(timeout=TIMEOUT)
    assert result['type'] == 'result', result
    say("push disabled")
    for x in (alice, bob, carol):
        x.disconnect()
    say("OK")


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--password', default='pass')
    try:
        asyncio.run(asyncio.wait_for(main(p.parse_args()), 45))
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
