//! Parser errors, each mapped to the RFC 6120 §4.9.3 stream error it causes.

/// Why the parser gave up on a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlError {
    /// Broken XML or invalid UTF-8 (RFC 6120 §4.9.3.13 `not-well-formed`).
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    /// Comments, processing instructions, DTDs or entity references
    /// (RFC 6120 §4.9.3.18 `restricted-xml`, §11.1).
    #[error("restricted XML: {0}")]
    RestrictedXml(&'static str),
    /// A configured limit was breached (RFC 6120 §4.9.3.14 `policy-violation`).
    #[error("limit exceeded: {0}")]
    PolicyViolation(&'static str),
    /// An encoding other than UTF-8 was declared (RFC 6120 §4.9.3.22, §11.6).
    #[error("unsupported encoding")]
    UnsupportedEncoding,
}

impl XmlError {
    /// The RFC 6120 stream error condition element name for this error.
    pub fn condition(&self) -> &'static str {
        match self {
            XmlError::NotWellFormed(_) => "not-well-formed",
            XmlError::RestrictedXml(_) => "restricted-xml",
            XmlError::PolicyViolation(_) => "policy-violation",
            XmlError::UnsupportedEncoding => "unsupported-encoding",
        }
    }
}
