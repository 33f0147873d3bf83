#!/usr/bin/env python3
"""Writes the seed corpus for the `stream` and `fragment` fuzz targets.

Stream seeds: first byte = chunk-size selector (see fuzz_targets/stream.rs),
the rest is a byte stream. Fragment seeds: one standalone element.
Run from fuzz/: python3 seeds/make_seeds.py
"""
import os

C2S = ("<stream:stream from='juliet@im.example.com' to='im.example.com' version='1.0' "
       "xml:lang='en' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
C2S_S = ("<stream:stream from='im.example.com' id='t7AMCin9zjMNwQKDnplntZPIDEI=' "
         "to='juliet@im.example.com' version='1.0' xml:lang='en' xmlns='jabber:client' "
         "xmlns:stream='http://etherx.jabber.org/streams'>")
S2S = ("<stream:stream from='im.example.com' to='example.net' version='1.0' "
       "xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>")
S2S_PREFIXFREE = ("<stream from='example.net' id='RChdjlgj/TIBcbT9Keu31zDihH4=' to='im.example.com' "
                  "version='1.0' xmlns='http://etherx.jabber.org/streams'>")
H = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
DECL = "<?xml version='1.0'?>"
CLOSE = "</stream:stream>"

stream = {
    # RFC 6120 §9.1.1 TLS
    "rfc6120-9.1.1-tls-client": (0x07, C2S + "\n<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
    "rfc6120-9.1.1-tls-server": (0xff, C2S_S + "<stream:features>\n  <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>\n    <required/>\n  </starttls>\n</stream:features><proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
    "rfc6120-9.1.1-tls-failure": (0x03, C2S_S + "<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\n" + CLOSE),
    # §9.1.2 SASL
    "rfc6120-9.1.2-sasl-features": (0x10, C2S_S + "<stream:features>\n<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\n<mechanism>SCRAM-SHA-1-PLUS</mechanism>\n<mechanism>SCRAM-SHA-1</mechanism>\n<mechanism>PLAIN</mechanism>\n</mechanisms>\n</stream:features>"),
    "rfc6120-9.1.2-sasl-auth": (0x01, DECL + C2S + "<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"\n      mechanism=\"SCRAM-SHA-1\">\n  biwsbj1qdWxpZXQscj1vTXNUQUF3QUFBQU1BQUFBTlAwVEFBQUFBQUJQVTBBQQ==\n</auth><response xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">\nYz1iaXdzLHI9b01zVEFBd0FBQUFNQUFBQU5QMFRBQUFBQUFCUFUwQUFlMTI0N\n</response>"),
    "rfc6120-9.1.2-sasl-failure-bad-close": (0x20, C2S_S + "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\n<not-authorized/>\n</failure>\n</stream>"),
    # §9.1.3 binding
    "rfc6120-9.1.3-bind": (0x05, C2S + "<iq id='yhc13a95' type='set'>\n  <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\n    <resource>balcony</resource>\n  </bind>\n</iq>"),
    "rfc6120-9.1.3-bind-result-error": (0x40, C2S_S + "<iq id='yhc13a95' type='result'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>\n juliet@im.example.com/balcony\n</jid></bind></iq><iq id='yhc13a95' type='error'><error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"),
    # §9.1.4, §9.1.5
    "rfc6120-9.1.4-message-close": (0x0d, C2S + "<message from='juliet@im.example.com/balcony'\n id='ju2ba41c'\n to='romeo@example.net'\n type='chat'\n xml:lang='en'>\n<body>Art thou not Romeo, and a Montague?</body>\n</message>" + CLOSE),
    # §9.2 s2s, prefix-free canonicalization
    "rfc6120-9.2-s2s": (0x30, S2S + "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth><message from='juliet@im.example.com/balcony' id='ju2ba41c' to='romeo@example.net' type='chat' xml:lang='en'><body>Art thou not Romeo, and a Montague?</body></message>" + CLOSE),
    "rfc6120-9.2-s2s-prefixfree": (0x08, S2S_PREFIXFREE + "<features xmlns='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms></features><success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/></stream>"),
    # Stanzas with extensions
    "chat-receipt-chatstate": (0x02, H + "<message to='romeo@example.net/orchard' id='m1' type='chat'><body>hi</body><active xmlns='http://jabber.org/protocol/chatstates'/><request xmlns='urn:xmpp:receipts'/></message><presence><show>away</show><status xml:lang='fr'>parti</status><priority>5</priority></presence>"),
    "stream-error": (0x11, C2S_S + "<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>bad</text></stream:error>" + CLOSE),
    # Nasty inputs
    "doctype": (0x04, DECL + "<!DOCTYPE stream:stream [<!ELEMENT body (#PCDATA)>]>" + H),
    "billion-laughs": (0x80, DECL + "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\"><!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">]>" + H + "<message><body>&lol3;</body></message>"),
    "entity-ref": (0x06, H + "<message><body>&nbsp;&lol;</body></message>"),
    "comment-in-stanza": (0x09, H + "<message><!-- hidden --><body>x</body></message>"),
    "comment-split": (0x00, H + "<message><!- not a comment -><body>x</body></message><!-"),
    "pi-after-header": (0x0a, H + "<?xml-stylesheet href='x'?><message/>"),
    "decl-encoding": (0x0b, "<?xml version='1.0' encoding='ISO-8859-1'?>" + H),
    "deep-nesting": (0x0f, H + "<a>" * 20 + "x" + "</a>" * 20),
    "cdata": (0x0c, H + "<message><body><![CDATA[<b>&amp;]] >]]>tail<![CDATA[]]></body></message><message><body><![CDATA[unclosed"),
    "char-refs": (0x12, H + "<message id='&#x9;&#10;&#13;&#x41;&lt;&apos;'><body>&#65;&#x1F600;&#0;</body></message><message><body>&#xD800;&#xFFFE;&#x110000;&#;&#x;</body></message>"),
    "text-specials": (0x13, H + "<message a='x\ty\nz\r' b=\"'\" c='\"'><body>]]&gt; a\r\nb\rc &amp;&lt;&gt;</body></message><message><body>]]></body></message>"),
    "prefixes": (0x14, H + "<p:message xmlns:p='jabber:client' xmlns:q='urn:q' q:attr='1' xml:lang='en'><q:x q:y='2' xmlns:r='urn:r' r:z='3'/><body xmlns=''>no ns</body></p:message><message xmlns:stream='urn:other'><stream:features/></message>"),
    "prefix-errors": (0x15, H + "<a xmlns:='u'/><b xmlns:xml='x'/><c xmlns:p=''/><u:d/><e a:b='1'/><f a='1' a='2'/><x:y:z/>"),
    "whitespace-text-top": (0x16, H + " \r\n\t <message/> junk <message/>"),
    "mismatched-end": (0x17, H + "<message><body></message></body>"),
    "end-before-start": (0x18, "</stream:stream>" + H),
    "empty-stream-header": (0x19, "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/><message/>"),
}

# Split UTF-8: a 4-byte and a 3-byte sequence cut by every chunk size, plus an
# invalid continuation and an overlong encoding.
utf8 = (H + "<message><body>caf\u00e9 \U0001F600 \u20ac \u4e2d</body><n\u00e9e a='\u00fc'/></message>").encode()
bad_utf8 = H.encode() + b"<message><body>\xf0\x9f\x98 \xc0\xaf \xed\xa0\x80</body></message>"
split_end = H.encode() + b"<message><body>x\xe2\x82"

os.makedirs("corpus/stream", exist_ok=True)
os.makedirs("corpus/fragment", exist_ok=True)
for name, (sel, text) in stream.items():
    with open(f"corpus/stream/{name}", "wb") as f:
        f.write(bytes([sel]) + text.encode())
for name, sel, raw in [("split-utf8-1", 0x00, utf8), ("split-utf8-3", 0x02, utf8),
                       ("bad-utf8", 0x01, bad_utf8), ("split-utf8-at-end", 0x04, split_end)]:
    with open(f"corpus/stream/{name}", "wb") as f:
        f.write(bytes([sel]) + raw)

fragment = {
    "message": "<message xmlns='jabber:client' to='romeo@example.net' type='chat'><body>hi &amp; bye</body><request xmlns='urn:xmpp:receipts'/></message>",
    "prefixed-attrs": "<a xmlns:p='urn:p' p:x='1' xml:lang='en'><p:b p:y='&#10;'>t<![CDATA[<c>]]></p:b></a>",
    "stream-ns": "<s:features xmlns:s='http://etherx.jabber.org/streams'><s:error/></s:features>",
    "framing-open": "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' version='1.0'/>",
    "trailing": "<a/><b/>",
    "comment": "<a><!--x--></a>",
}
for name, text in fragment.items():
    with open(f"corpus/fragment/{name}", "w") as f:
        f.write(text)
