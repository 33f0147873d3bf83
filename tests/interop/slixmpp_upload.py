#!/usr/bin/python3
"""XEP-0363 interop check with slixmpp's xep_0363 plugin (Debian packages
python3-slixmpp and python3-aiohttp).

alice logs in; the plugin finds the upload service through the server's
disco#items and disco#info (identity store/file, the feature and the
max-file-size form), requests a slot for --file and PUTs it with aiohttp.
Prints the GET URL ("GET URL <url>"): the Rust test downloads it with curl
and compares the bytes.

Exit status 0 on success, 1 with the reason on stderr otherwise (3 if
slixmpp or aiohttp is missing).
"""

import argparse
import asyncio
import functools
import os
import ssl
import sys

try:
    import aiohttp
    import slixmpp
    from slixmpp.plugins.xep_0363 import http_upload
except ImportError as e:  # pragma: no cover
    print(f"FAIL: cannot import slixmpp or aiohttp ({e}); "
          "install python3-slixmpp and python3-aiohttp", file=sys.stderr)
    sys.exit(3)

DOMAIN = 'localhost'
TIMEOUT = 15.0


def say(msg):
    print(f"[slixmpp_upload] {msg}", flush=True)


def trust_test_certificate():
    """The test server's certificate is self-signed: the plugin's aiohttp
    session gets a connector that does not check it (the XMPP stream below
    does the same with ssl_context). Nothing else of the plugin changes."""
    session = http_upload.ClientSession

    def unverified(*args, **kwargs):
        kwargs.setdefault('connector', aiohttp.TCPConnector(ssl=False))
        return session(*args, **kwargs)

    http_upload.ClientSession = functools.wraps(session)(unverified)


async def main(args):
    trust_test_certificate()
    loop = asyncio.get_running_loop()
    x = slixmpp.ClientXMPP(f"alice@{DOMAIN}/slix", args.password)
    x.ssl_context.check_hostname = False
    x.ssl_context.verify_mode = ssl.CERT_NONE
    for p in ('xep_0030', 'xep_0128', 'xep_0363'):
        x.register_plugin(p)
    ready = loop.create_future()
    x.add_event_handler('session_start', lambda _: ready.done() or ready.set_result(True))
    x.add_event_handler(
        'failed_all_auth',
        lambda _: ready.done() or ready.set_exception(RuntimeError("auth failed")))
    x.connect(address=('127.0.0.1', args.port))
    await asyncio.wait_for(ready, TIMEOUT)
    say("online")

    # The plugin's own find_upload_service() passes coroutines to
    # asyncio.wait, which this Python refuses (slixmpp 1.8.3 on Python
    # >= 3.11): the same discovery, done here with xep_0030 and the same
    # tests (identity store/file, the feature, the max-file-size form).
    upload = x.plugin['xep_0363']
    disco = x.plugin['xep_0030']
    items = await disco.get_items(jid=DOMAIN, timeout=TIMEOUT)
    info = None
    for jid, _node, _name in items['disco_items']['items']:
        candidate = await disco.get_info(jid=jid, timeout=TIMEOUT)
        identities = [(i[0], i[1]) for i in candidate['disco_info']['identities']]
        if ('store', 'file') in identities and \
                'urn:xmpp:http:upload:0' in candidate['disco_info']['features']:
            info = candidate
            break
    assert info is not None, "no upload service found"
    assert str(info['from']) == f"upload.{DOMAIN}", info
    upload.upload_service = info['from']
    for form in info['disco_info'].iterables:
        values = form['values']
        if values['FORM_TYPE'] == ['urn:xmpp:http:upload:0']:
            upload.max_file_size = int(values['max-file-size'])
    say(f"service {info['from']}, max-file-size {upload.max_file_size}")

    size = os.path.getsize(args.file)
    url = await upload.upload_file(args.file, timeout=TIMEOUT)
    assert upload.max_file_size == 10 * 1024 * 1024, upload.max_file_size
    say(f"uploaded {size} bytes; max-file-size {upload.max_file_size}")
    say(f"GET URL {url}")

    # Too large for the service: refused by the plugin from the disco form.
    try:
        await upload.upload_file('big.bin', size=upload.max_file_size + 1,
                                 input_file=open(args.file, 'rb'), timeout=TIMEOUT)
        raise AssertionError("a file over max-file-size was accepted")
    except http_upload.FileTooBig:
        say("file over max-file-size refused")

    x.disconnect()
    say("OK")


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--password', default='pass')
    p.add_argument('--file', required=True)
    try:
        asyncio.run(asyncio.wait_for(main(p.parse_args()), 40))
    except Exception as e:  # noqa: BLE001
        print(f"FAIL: {type(e).__name__}: {e!r}", file=sys.stderr)
        sys.exit(1)
