//! XEP-0198 stream management, session side: the outbound counter and the
//! queue of stanzas the client has not acknowledged yet.
//!
//! The queue lives here rather than in the cm so that a stream can resume on
//! another connection manager (DESIGN.md). An [`SmLink`] wraps the cm's link
//! of an SM-enabled session: every stanza delivered through it is counted and
//! kept until acknowledged; while the session is detached (hibernated) it is
//! only kept.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use rookery_core::roles::{SmError, SmParams};
use rookery_core::{ClientLink, DeliverError, StreamError};
use rookery_xml::Element;

/// `urn:xmpp:sm:3`.
pub const NS: &str = "urn:xmpp:sm:3";

#[derive(Debug)]
struct SmState {
    /// The connection, or `None` while detached.
    inner: Option<Arc<dyn ClientLink>>,
    /// Stanzas sent (or queued) since `<enable/>`, modulo 2^32 (§4).
    sent: u32,
    /// The last `h` the client acknowledged.
    acked: u32,
    /// Stanzas `acked + 1 ..= sent`.
    queue: VecDeque<Arc<Element>>,
    /// Stanzas handled from the client, as last reported by the cm.
    inbound: u32,
    /// Rebuilt by a new owner (cluster handover): the counters of the old
    /// owner are unknown, so the client's next `h` becomes the base.
    rebase: bool,
    /// Taken over from a graceful handover: a stanza the old owner sent
    /// after its snapshot (a race the handover narrows but cannot close
    /// for deliveries between accounts) reached the client uncounted, so
    /// an `h` beyond `sent` is taken as the new base instead of an error.
    lenient: bool,
}

/// The session's link once stream management is enabled.
#[derive(Debug)]
pub(crate) struct SmLink {
    /// The resumption id, if resumption was granted.
    pub(crate) id: Option<String>,
    pub(crate) params: SmParams,
    state: Mutex<SmState>,
}

impl SmLink {
    pub(crate) fn new(id: Option<String>, params: SmParams, inner: Arc<dyn ClientLink>) -> SmLink {
        SmLink {
            id,
            params,
            state: Mutex::new(SmState {
                inner: Some(inner),
                sent: 0,
                acked: 0,
                queue: VecDeque::new(),
                inbound: 0,
                rebase: false,
                lenient: false,
            }),
        }
    }

    /// The state a new owner rebuilds after a handover: the counters and
    /// the unacknowledged stanzas of the old owner are gone (those stanzas
    /// were already with the cm); the client's next acknowledgement sets
    /// the base, counting none of the stanzas sent since as acknowledged,
    /// so that a resumption replays too much rather than too little.
    pub(crate) fn rebuilt(
        id: Option<String>,
        params: SmParams,
        inner: Option<Arc<dyn ClientLink>>,
    ) -> SmLink {
        let l = SmLink::new(id, params, Arc::new(Nowhere));
        if let Ok(mut st) = l.state.lock() {
            st.inner = inner;
            st.rebase = true;
        }
        l
    }

    /// The state a new owner takes over from a graceful handover: the old
    /// owner's exact counters and queue (stanzas that do not parse are
    /// dropped, which the counters then show as sent and lost).
    pub(crate) fn handed(
        id: Option<String>,
        params: SmParams,
        inner: Option<Arc<dyn ClientLink>>,
        q: &crate::peers::SmQueue,
    ) -> SmLink {
        let l = SmLink::new(id, params, Arc::new(Nowhere));
        if let Ok(mut st) = l.state.lock() {
            st.inner = inner;
            st.queue = q
                .stanzas
                .iter()
                .filter_map(|x| Element::parse(x).ok().map(Arc::new))
                .collect();
            st.acked = q.acked;
            st.sent = q.acked.wrapping_add(st.queue.len() as u32);
            st.inbound = q.inbound;
            st.lenient = true;
        }
        l
    }

    /// The counters and queue, for a graceful handover.
    pub(crate) fn snapshot(&self) -> crate::peers::SmQueue {
        self.state
            .lock()
            .map(|st| crate::peers::SmQueue {
                sent: st.sent,
                acked: st.acked,
                inbound: st.inbound,
                stanzas: st.queue.iter().map(|e| e.to_xml_string()).collect(),
            })
            .unwrap_or_default()
    }

    /// The inbound count last reported.
    pub(crate) fn inbound(&self) -> u32 {
        self.state.lock().map(|st| st.inbound).unwrap_or(0)
    }

    /// §4: drops what the client acknowledged.
    pub(crate) fn ack(&self, h: u32, inbound: Option<u32>) -> Result<(), SmError> {
        let Ok(mut st) = self.state.lock() else {
            return Err(SmError::NotFound);
        };
        if let Some(i) = inbound {
            st.inbound = i;
        }
        ack_locked(&mut st, h)
    }

    /// The connection went away: keep queueing until resumed or expired.
    pub(crate) fn detach(&self, inbound: u32) {
        if let Ok(mut st) = self.state.lock() {
            st.inner = None;
            st.inbound = inbound;
        }
    }

    pub(crate) fn is_detached(&self) -> bool {
        self.state
            .lock()
            .map(|st| st.inner.is_none())
            .unwrap_or(true)
    }

    /// §5: moves the session to a new connection. Drops what the client
    /// acknowledged, closes a still attached old connection, then queues
    /// `<resumed/>` and every unacknowledged stanza on `link`. Returns the
    /// server's inbound count.
    pub(crate) fn attach(&self, h: u32, link: Arc<dyn ClientLink>) -> Result<u32, SmError> {
        let Ok(mut st) = self.state.lock() else {
            return Err(SmError::NotFound);
        };
        ack_locked(&mut st, h)?;
        if let Some(old) = st.inner.take() {
            old.close(StreamError::new("conflict").with_text("the session was resumed elsewhere"));
        }
        let resumed = Element::new_static("resumed", NS)
            .with_attr("h", st.inbound.to_string())
            .with_attr("previd", self.id.clone().unwrap_or_default());
        let _ = link.deliver(Arc::new(resumed));
        for el in &st.queue {
            if link.deliver(el.clone()) == Err(DeliverError::Full) {
                link.close(
                    StreamError::new("policy-violation")
                        .with_text("too many unacknowledged stanzas to replay"),
                );
                break;
            }
        }
        st.inner = Some(link);
        Ok(st.inbound)
    }

    /// Everything not acknowledged, emptying the queue.
    pub(crate) fn take_unacked(&self) -> Vec<Arc<Element>> {
        self.state
            .lock()
            .map(|mut st| st.queue.drain(..).collect())
            .unwrap_or_default()
    }
}

/// A link to no connection (placeholder while building a detached state).
#[derive(Debug)]
struct Nowhere;

impl ClientLink for Nowhere {
    fn deliver(&self, _: Arc<Element>) -> Result<(), DeliverError> {
        Err(DeliverError::Closed)
    }
    fn close(&self, _: StreamError) {}
}

fn ack_locked(st: &mut SmState, h: u32) -> Result<(), SmError> {
    if st.rebase {
        st.rebase = false;
        st.acked = h;
        st.sent = h.wrapping_add(st.queue.len() as u32);
        return Ok(());
    }
    let n = h.wrapping_sub(st.acked) as usize;
    if n > st.queue.len() {
        // Within 2^31 ahead (not an old h that wrapped): the stanzas the
        // old owner sent uncounted.
        if st.lenient && n < 1 << 31 {
            st.queue.clear();
            st.acked = h;
            st.sent = h;
            return Ok(());
        }
        return Err(SmError::TooHigh { h, sent: st.sent });
    }
    st.queue.drain(..n);
    st.acked = h;
    Ok(())
}

impl ClientLink for SmLink {
    fn deliver(&self, stanza: Arc<Element>) -> Result<(), DeliverError> {
        let Ok(mut st) = self.state.lock() else {
            return Err(DeliverError::Closed);
        };
        if st.queue.len() >= self.params.max_queue {
            // Attached: the caller closes the stream (policy-violation).
            // Detached: the stanza is handled as if the resource were gone.
            return Err(if st.inner.is_some() {
                DeliverError::Full
            } else {
                DeliverError::Closed
            });
        }
        if let Some(inner) = &st.inner
            && inner.deliver(stanza.clone()) == Err(DeliverError::Full)
        {
            return Err(DeliverError::Full);
        }
        // A connection that is already closed still counts: the stanza is
        // replayed on resumption or rerouted when the session ends.
        st.sent = st.sent.wrapping_add(1);
        st.queue.push_back(stanza);
        Ok(())
    }

    fn close(&self, error: StreamError) {
        if let Ok(st) = self.state.lock()
            && let Some(inner) = &st.inner
        {
            inner.close(error);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex as StdMutex;

    use super::*;

    /// A link that records what it was given.
    #[derive(Debug, Default)]
    struct Recorder(StdMutex<Vec<String>>);

    impl ClientLink for Recorder {
        fn deliver(&self, stanza: Arc<Element>) -> Result<(), DeliverError> {
            self.0.lock().unwrap().push(stanza.to_xml_string());
            Ok(())
        }
        fn close(&self, _: StreamError) {}
    }

    fn params() -> SmParams {
        SmParams {
            resume: true,
            timeout: std::time::Duration::from_secs(60),
            max_queue: 100,
        }
    }

    fn msg(i: u32) -> Arc<Element> {
        Arc::new(Element::parse(&format!("<message xmlns='jabber:client' id='m{i}'/>")).unwrap())
    }

    /// A graceful handover carries the exact counters and queue: the new
    /// owner takes the client's acknowledgements as the old one would, and
    /// a resumption replays exactly what was not acknowledged (§4, §5).
    #[test]
    fn a_handed_over_queue_continues_exactly() {
        let old = SmLink::new(Some("id".into()), params(), Arc::new(Recorder::default()));
        for i in 0..5 {
            old.deliver(msg(i)).unwrap();
        }
        old.ack(2, Some(7)).unwrap();
        let q = old.snapshot();
        assert_eq!((q.sent, q.acked, q.inbound, q.stanzas.len()), (5, 2, 7, 3));
        let new = SmLink::handed(Some("id".into()), params(), None, &q);
        assert_eq!(new.inbound(), 7);
        new.deliver(msg(5)).unwrap();
        new.ack(4, None).unwrap();
        let client = Arc::new(Recorder::default());
        assert_eq!(new.attach(4, client.clone()).unwrap(), 7);
        let got = client.0.lock().unwrap().clone();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with("<resumed"), "{got:?}");
        assert!(got[1].contains("m4") && got[2].contains("m5"), "{got:?}");
        // A stanza the old owner sent after its snapshot: the client's h
        // runs one ahead, which becomes the base instead of an error.
        new.ack(7, None).unwrap();
        new.deliver(msg(6)).unwrap();
        new.ack(8, None).unwrap();
        assert!(new.take_unacked().is_empty());
    }

    /// Without a handover, an h beyond what was sent is the §4 error.
    #[test]
    fn too_high_is_an_error_on_an_ordinary_link() {
        let l = SmLink::new(None, params(), Arc::new(Recorder::default()));
        l.deliver(msg(0)).unwrap();
        assert!(matches!(
            l.ack(2, None),
            Err(SmError::TooHigh { h: 2, sent: 1 })
        ));
        l.ack(1, None).unwrap();
    }
}
