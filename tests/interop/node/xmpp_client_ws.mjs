// @xmpp/client 0.14 over WebSocket (RFC 7395): log in, send a message to
// a TCP client, wait for its answer. Usage:
//   node xmpp_client_ws.mjs wss://localhost:PORT/xmpp-websocket USER PASS PEER_JID
// Prints "received: <body>" and exits 0, or exits 1 with the error.
// NODE_TLS_REJECT_UNAUTHORIZED=0 accepts the test server's certificate.
import WebSocket from "ws";

// Node 20 has no global WebSocket without a flag; `ws` is the usual one.
globalThis.WebSocket = WebSocket;
const { client, xml } = await import("@xmpp/client");

const [service, username, password, peer] = process.argv.slice(2);
setTimeout(() => { console.error("timed out"); process.exit(1); }, 20000).unref();

const c = client({ service, domain: "localhost", username, password, resource: "xmppjs",
  // PLAIN: fast (SCRAM-SHA-1 costs a second of PBKDF2 in JS); TLS is below.
  credentials: (auth, mechanism) => auth({ username, password }, "PLAIN") });
c.reconnect.stop();
c.on("error", (e) => { console.error("error:", e.message || e); });
// INTEROP.md §3: @xmpp/client 0.14 sometimes acks a lower XEP-0198 `h`
// after <enabled/>; this test is about the transport, so SM stays off.
c.prependListener("element", (el) => {
  if (el.is("features", "http://etherx.jabber.org/streams")) {
    el.children = el.children.filter((ch) => !ch.is?.("sm", "urn:xmpp:sm:3"));
  }
});
const answered = new Promise((resolve) => {
  c.on("stanza", (s) => {
    if (s.is("message") && s.getChildText("body")) resolve(s.getChildText("body"));
  });
});
try {
  const jid = await c.start();
  console.log("online:", jid.toString());
  await c.send(xml("presence"));
  await c.send(xml("message", { to: peer, type: "chat" }, xml("body", {}, "hello from xmpp.js")));
  const body = await answered;
  console.log("received:", body);
  await c.stop();
  process.exit(0);
} catch (e) {
  console.error("failed:", e.message || e);
  process.exit(1);
}
