// strophe.js 5 over BOSH (XEP-0124/XEP-0206) in Node: log in, send a
// message to a TCP client, wait for its answer, disconnect. Usage:
//   node strophe_bosh.mjs https://localhost:PORT/http-bind USER@DOMAIN PASS PEER_JID
// Prints "received: <body>" and exits 0, or exits 1 with the error.
// NODE_TLS_REJECT_UNAUTHORIZED=0 accepts the test server's certificate.
import XHR2 from "xhr2";
import { DOMParser } from "@xmldom/xmldom";

// Node has no XMLHttpRequest; xhr2 emulates it but has no responseXML,
// which a browser's XHR parses from the text (Strophe reads that).
class XMLHttpRequest extends XHR2 {
  get responseXML() {
    if (this.readyState !== 4 || !this.responseText) return null;
    try {
      return new DOMParser().parseFromString(this.responseText, "text/xml");
    } catch {
      return null;
    }
  }
}
globalThis.XMLHttpRequest = XMLHttpRequest;
const { Strophe, $msg, $pres } = await import("strophe.js");

const [service, jid, password, peer] = process.argv.slice(2);
setTimeout(() => { console.error("timed out"); process.exit(1); }, 20000).unref();

// An http(s) service URL selects the BOSH transport.
const conn = new Strophe.Connection(service);
const status = {};
for (const [k, v] of Object.entries(Strophe.Status)) status[v] = k;
conn.addHandler((m) => {
  const body = m.getElementsByTagName("body")[0];
  if (body) {
    console.log("received:", body.textContent);
    received = true;
    conn.disconnect("done");
  }
  return true;
}, null, "message");
let online = false;
let received = false;
conn.connect(jid + "/strophe", password, (s, cond) => {
  console.log("status:", status[s], cond ?? "");
  if (s === Strophe.Status.CONNECTED) {
    online = true;
    console.log("online:", conn.jid);
    conn.send($pres());
    conn.send($msg({ to: peer, type: "chat" }).c("body").t("hello from strophe"));
  } else if (s === Strophe.Status.DISCONNECTED) {
    process.exit(online && received ? 0 : 1);
  } else if (s === Strophe.Status.AUTHFAIL || s === Strophe.Status.CONNFAIL) {
    process.exit(1);
  }
});
