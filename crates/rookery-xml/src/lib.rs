//! XML streams for Rookery (RFC 6120 §4 and §11).
//!
//! - [`Parser`]: incremental, limit-enforcing parser built on quick-xml that turns
//!   bytes into [`StreamEvent`]s (stream open, stanzas, stream close).
//! - [`Element`]: the parsed tree, with a canonical serializer used for every
//!   stanza Rookery forwards.
//! - [`ns`]: every namespace the server knows.

mod element;
mod error;
pub mod ns;
mod parser;

pub use element::{Attr, Element, Node, escape_attr, escape_text};
pub use error::XmlError;
pub use parser::{Limits, Parser, StreamEvent, StreamHeader};

#[cfg(test)]
mod tests;
