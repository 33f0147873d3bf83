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
