//! RFC 7622: XMPP Address Format
//!
//! A [`Jid`] is always stored in its prepared and enforced (normalized) form, so two
//! addresses are equivalent exactly when their string forms are byte-for-byte equal
//! (RFC 7622 §3.2.3, and the comparison rules of RFC 8265 §3.3.4 / §4.2.4).
//!
//! Each part is prepared on its own:
//!
//! * localpart: PRECIS `UsernameCaseMapped` (RFC 8265 §3.3) plus the XMPP-specific
//!   exclusions of RFC 7622 §3.3.1, see [`prep_localpart`];
//! * domainpart: IDNA2008-style mapping to U-labels (RFC 7622 §3.2), implemented with
//!   UTS #46 non-transitional processing, or an IP literal, see [`prep_domainpart`];
//! * resourcepart: PRECIS `OpaqueString` (RFC 8265 §4.2), see [`prep_resourcepart`].
//!
//! Pure-ASCII parts that are already in normalized form are validated without touching
//! the PRECIS or IDNA machinery and without allocating (the `prep_*` functions return
//! [`Cow::Borrowed`]).

use std::borrow::Cow;
use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use precis_core::profile::PrecisFastInvocation;
use precis_core::{IdentifierClass, StringClass};
use precis_profiles::{OpaqueString, UsernameCaseMapped};

/// Maximum length in octets of each part after preparation (RFC 7622 §3.1).
pub const MAX_PART_LEN: usize = 1023;

/// Error returned when a string is not a valid JID or JID part (RFC 7622 §3, §4).
///
/// Every variant corresponds to a `<jid-malformed/>` stanza error (RFC 6120 §8.3.3.8).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JidError {
    /// A '@' separator is present but the localpart is empty (RFC 7622 §3.3).
    #[error("localpart is empty")]
    EmptyLocalpart,
    /// The domainpart is empty (RFC 7622 §3.2).
    #[error("domainpart is empty")]
    EmptyDomain,
    /// A '/' separator is present but the resourcepart is empty (RFC 7622 §3.4).
    #[error("resourcepart is empty")]
    EmptyResource,
    /// The prepared localpart is longer than 1023 octets (RFC 7622 §3.3).
    #[error("localpart is longer than 1023 bytes")]
    LocalpartTooLong,
    /// The prepared domainpart is longer than 1023 octets (RFC 7622 §3.2).
    #[error("domainpart is longer than 1023 bytes")]
    DomainTooLong,
    /// The prepared resourcepart is longer than 1023 octets (RFC 7622 §3.4).
    #[error("resourcepart is longer than 1023 bytes")]
    ResourceTooLong,
    /// The localpart violates the `UsernameCaseMapped` profile or RFC 7622 §3.3.1.
    #[error("localpart contains disallowed characters")]
    BadLocalpart,
    /// The domainpart is not a valid IDN, hostname or IP literal (RFC 7622 §3.2).
    #[error("domainpart is not a valid domain name or IP literal")]
    BadDomain,
    /// The resourcepart violates the `OpaqueString` profile (RFC 7622 §3.4).
    #[error("resourcepart contains disallowed characters")]
    BadResource,
}

/// An XMPP address (RFC 7622 §3), always stored normalized.
///
/// Internally a single string `[localpart "@"] domainpart ["/" resourcepart]` plus two
/// offsets, so accessors never allocate. Equality, ordering and hashing are those of the
/// normalized string form (the offsets are fully determined by it).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jid {
    /// Normalized form of the whole address.
    inner: Box<str>,
    /// Length of the localpart in bytes; 0 when there is no localpart (a present
    /// localpart is never empty).
    node_len: u16,
    /// Byte offset where the domainpart ends; equal to `inner.len()` when there is no
    /// resourcepart, otherwise the offset of the '/' separator.
    domain_end: u16,
}

impl Jid {
    /// Parses and normalizes a JID string.
    ///
    /// The string is split into parts before any transformation (RFC 7622 §3.1,
    /// implementation note): everything after the first '/' is the resourcepart, and in
    /// what remains everything before the first '@' is the localpart (RFC 7622 §3.2).
    /// Each part is then prepared and enforced (RFC 7622 §3.2.2, §3.3, §3.4).
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        let (bare_in, resource_in) = match s.find('/') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        let (node_in, domain_in) = match bare_in.find('@') {
            Some(i) => (Some(&bare_in[..i]), &bare_in[i + 1..]),
            None => (None, bare_in),
        };
        let node = node_in.map(prep_localpart).transpose()?;
        let domain = prep_domainpart(domain_in)?;
        let resource = resource_in.map(prep_resourcepart).transpose()?;

        // Common case: the input already was in normalized form, so every part came back
        // borrowed and unchanged and the input can be copied verbatim. The `prep_*`
        // functions only ever borrow their whole input, except `prep_domainpart`, which
        // may borrow it minus a trailing dot (hence the length check).
        let unchanged = matches!(node, None | Some(Cow::Borrowed(_)))
            && matches!(domain, Cow::Borrowed(d) if d.len() == domain_in.len())
            && matches!(resource, None | Some(Cow::Borrowed(_)));
        if unchanged {
            return Ok(Jid::from_raw(s, node_in.map_or(0, str::len), bare_in.len()));
        }
        Ok(Jid::assemble(node.as_deref(), &domain, resource.as_deref()))
    }

    /// Builds a JID from its parts, preparing each of them (RFC 7622 §3.2-§3.4).
    ///
    /// `Some("")` for the localpart or resourcepart is an error, as in [`Jid::parse`].
    pub fn new(node: Option<&str>, domain: &str, resource: Option<&str>) -> Result<Jid, JidError> {
        let node = node.map(prep_localpart).transpose()?;
        let domain = prep_domainpart(domain)?;
        let resource = resource.map(prep_resourcepart).transpose()?;
        Ok(Jid::assemble(node.as_deref(), &domain, resource.as_deref()))
    }

    /// Concatenates already prepared parts.
    fn assemble(node: Option<&str>, domain: &str, resource: Option<&str>) -> Jid {
        let cap =
            node.map_or(0, |n| n.len() + 1) + domain.len() + resource.map_or(0, |r| r.len() + 1);
        let mut inner = String::with_capacity(cap);
        if let Some(n) = node {
            inner.push_str(n);
            inner.push('@');
        }
        inner.push_str(domain);
        let domain_end = inner.len();
        if let Some(r) = resource {
            inner.push('/');
            inner.push_str(r);
        }
        Jid::from_raw(&inner, node.map_or(0, str::len), domain_end)
    }

    /// Wraps an already normalized string. Offsets fit in `u16` because every part is at
    /// most 1023 bytes (so the whole JID is at most 3071 bytes, RFC 7622 §3.1).
    fn from_raw(s: &str, node_len: usize, domain_end: usize) -> Jid {
        debug_assert!(s.len() <= 3 * MAX_PART_LEN + 2);
        Jid {
            inner: Box::from(s),
            node_len: to_u16(node_len),
            domain_end: to_u16(domain_end),
        }
    }

    /// The localpart (RFC 7622 §3.3), if any.
    pub fn node(&self) -> Option<&str> {
        match usize::from(self.node_len) {
            0 => None,
            n => Some(&self.inner[..n]),
        }
    }

    /// The domainpart (RFC 7622 §3.2).
    pub fn domain(&self) -> &str {
        let start = match usize::from(self.node_len) {
            0 => 0,
            n => n + 1,
        };
        &self.inner[start..usize::from(self.domain_end)]
    }

    /// The resourcepart (RFC 7622 §3.4), if any.
    pub fn resource(&self) -> Option<&str> {
        let end = usize::from(self.domain_end);
        if end < self.inner.len() {
            Some(&self.inner[end + 1..])
        } else {
            None
        }
    }

    /// True when the JID has no resourcepart ("bare JID", RFC 6120 §1.4).
    pub fn is_bare(&self) -> bool {
        usize::from(self.domain_end) == self.inner.len()
    }

    /// True when the JID has a resourcepart ("full JID", RFC 6120 §1.4).
    pub fn is_full(&self) -> bool {
        !self.is_bare()
    }

    /// The same JID without its resourcepart (a single copy of the bare prefix).
    pub fn to_bare(&self) -> Jid {
        if self.is_bare() {
            return self.clone();
        }
        Jid {
            inner: Box::from(self.bare_str()),
            node_len: self.node_len,
            domain_end: self.domain_end,
        }
    }

    /// The bare form, `localpart@domainpart` or `domainpart`, borrowed from `self`.
    pub fn bare_str(&self) -> &str {
        &self.inner[..usize::from(self.domain_end)]
    }

    /// The bare part of this JID with the given resourcepart, which is prepared as an
    /// `OpaqueString` (RFC 7622 §3.4). Any existing resourcepart is replaced.
    pub fn with_resource(&self, res: &str) -> Result<Jid, JidError> {
        let res = prep_resourcepart(res)?;
        let bare = self.bare_str();
        let mut inner = String::with_capacity(bare.len() + 1 + res.len());
        inner.push_str(bare);
        inner.push('/');
        inner.push_str(&res);
        Ok(Jid {
            inner: inner.into_boxed_str(),
            node_len: self.node_len,
            domain_end: self.domain_end,
        })
    }

    /// The whole normalized JID.
    pub fn as_str(&self) -> &str {
        &self.inner
    }
}

fn to_u16(n: usize) -> u16 {
    // Parts are bounded by MAX_PART_LEN, so this never saturates for a prepared JID.
    u16::try_from(n).unwrap_or(u16::MAX)
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner)
    }
}

impl fmt::Debug for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jid({:?})", &*self.inner)
    }
}

impl FromStr for Jid {
    type Err = JidError;

    fn from_str(s: &str) -> Result<Jid, JidError> {
        Jid::parse(s)
    }
}

impl AsRef<str> for Jid {
    fn as_ref(&self) -> &str {
        &self.inner
    }
}

/// Characters excluded from localparts in addition to those the `UsernameCaseMapped`
/// profile disallows (RFC 7622 §3.3.1).
fn is_excluded_from_localpart(b: u8) -> bool {
    matches!(b, b'"' | b'&' | b'\'' | b'/' | b':' | b'<' | b'>' | b'@')
}

/// Prepares and enforces a localpart (RFC 7622 §3.3).
///
/// Applies the PRECIS `UsernameCaseMapped` profile (RFC 8265 §3.3: width mapping, case
/// mapping to lowercase, NFC, bidi rule, `IdentifierClass` code points), then rejects the
/// further excluded characters `" & ' / : < > @` (RFC 7622 §3.3.1) and enforces the
/// 1..=1023 octet length (RFC 7622 §3.3).
///
/// Already-normalized ASCII input is returned borrowed without running PRECIS.
pub fn prep_localpart(s: &str) -> Result<Cow<'_, str>, JidError> {
    if s.is_empty() {
        return Err(JidError::EmptyLocalpart);
    }
    let out = if s.is_ascii() {
        // RFC 8264 §9.11: printable ASCII (ASCII7) is PVALID in the IdentifierClass; for
        // ASCII, UsernameCaseMapped reduces to lowercasing (no width mapping, NFC and
        // bidi are no-ops), so PRECIS is not needed.
        let bytes = s.as_bytes();
        if bytes
            .iter()
            .any(|&b| !b.is_ascii_graphic() || is_excluded_from_localpart(b))
        {
            return Err(JidError::BadLocalpart);
        }
        if bytes.iter().any(u8::is_ascii_uppercase) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    } else {
        let out = UsernameCaseMapped::enforce(s).map_err(|_| JidError::BadLocalpart)?;
        // Width mapping can produce excluded ASCII characters (e.g. U+FF20 -> '@').
        if out.bytes().any(is_excluded_from_localpart) {
            return Err(JidError::BadLocalpart);
        }
        out
    };
    if out.len() > MAX_PART_LEN {
        return Err(JidError::LocalpartTooLong);
    }
    Ok(out)
}

/// Prepares and enforces a resourcepart (RFC 7622 §3.4).
///
/// Applies the PRECIS `OpaqueString` profile (RFC 8265 §4.2: non-ASCII spaces mapped to
/// U+0020, NFC, `FreeformClass` code points) and enforces the 1..=1023 octet length.
///
/// In addition, a resourcepart may not begin or end with U+0020 SPACE: RFC 7622 §3.5
/// lists `juliet@example.com/ foo` (example 18) as not a JID, although the
/// `OpaqueString` profile alone would accept it. Trailing space is rejected for the same
/// reason (it is invisible and only produces confusable addresses).
///
/// Already-normalized ASCII input is returned borrowed without running PRECIS.
pub fn prep_resourcepart(s: &str) -> Result<Cow<'_, str>, JidError> {
    if s.is_empty() {
        return Err(JidError::EmptyResource);
    }
    let out = if s.is_ascii() {
        // RFC 8264 §9.11/§9.14: printable ASCII and U+0020 are PVALID in the
        // FreeformClass, and OpaqueString leaves ASCII unchanged.
        if s.bytes().any(|b| !(b == b' ' || b.is_ascii_graphic())) {
            return Err(JidError::BadResource);
        }
        Cow::Borrowed(s)
    } else {
        OpaqueString::enforce(s).map_err(|_| JidError::BadResource)?
    };
    if out.starts_with(' ') || out.ends_with(' ') {
        return Err(JidError::BadResource);
    }
    if out.len() > MAX_PART_LEN {
        return Err(JidError::ResourceTooLong);
    }
    Ok(out)
}

/// Prepares and enforces a domainpart (RFC 7622 §3.2).
///
/// * One trailing label separator (`.`, or U+3002, U+FF0E, U+FF61, which IDNA maps to
///   `.`) is stripped before anything else (RFC 7622 §3.2).
/// * `[...]` is an IPv6 literal (RFC 7622 §3.1 `IP-literal`); it is normalized to the
///   RFC 5952 text form. Zone identifiers (RFC 6874) and `IPvFuture` are rejected.
/// * Anything else, including dotted-quad IPv4 addresses, is processed as a domain name
///   with UTS #46 non-transitional `ToUnicode` (STD3 ASCII rules, no leading or trailing
///   hyphen in a label, bidi and joiner checks), which lowercases, width-maps and
///   NFC-normalizes (RFC 7622 §3.2.2) and converts A-labels to U-labels
///   (RFC 7622 §3.2.1). Empty labels are rejected, and so are non-ASCII labels with
///   code points IDNA2008 disallows (checked with the PRECIS `IdentifierClass`).
/// * The result must be 1..=1023 octets (RFC 7622 §3.2). The DNS limits of RFC 1034
///   (63-octet labels, 253-octet names) are left to the DNS layer.
///
/// Plain ASCII host names are only lowercased, without running IDNA; already-normalized
/// ones are returned borrowed.
pub fn prep_domainpart(s: &str) -> Result<Cow<'_, str>, JidError> {
    let s = strip_trailing_dot(s);
    if s.is_empty() {
        return Err(JidError::EmptyDomain);
    }
    let out = if s.starts_with('[') {
        prep_ip_literal(s)?
    } else if let Some(has_upper) = plain_ascii_hostname(s) {
        if has_upper {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    } else {
        prep_idn(s)?
    };
    if out.len() > MAX_PART_LEN {
        return Err(JidError::DomainTooLong);
    }
    Ok(out)
}

/// Slow path of [`prep_domainpart`]: UTS #46 `ToUnicode` plus the IDNA2008 repertoire
/// check (RFC 7622 §3.2.1, §3.2.2).
fn prep_idn(s: &str) -> Result<Cow<'_, str>, JidError> {
    let (out, res) = idna::uts46::Uts46::new().to_unicode(
        s.as_bytes(),
        idna::AsciiDenyList::STD3,
        idna::uts46::Hyphens::CheckFirstLast,
    );
    if res.is_err() {
        return Err(JidError::BadDomain);
    }
    if out.is_empty() {
        return Err(JidError::EmptyDomain);
    }
    // UTS #46 is more permissive than IDNA2008 (it accepts e.g. symbols and emoji),
    // but RFC 7622 §3.2.1 requires code points allowed in U-labels (RFC 5890/5892).
    // On the case-folded NFC output, the PRECIS IdentifierClass (RFC 8264 §4.2,
    // derived with the same RFC 5892 categories, exceptions and CONTEXTJ/CONTEXTO
    // rules) closely approximates the IDNA2008 PVALID/CONTEXT repertoire; ASCII
    // labels were already restricted to LDH by the STD3 rules.
    for label in out.split('.') {
        if label.is_empty()
            || (!label.is_ascii() && IdentifierClass::default().allows(label).is_err())
        {
            return Err(JidError::BadDomain);
        }
    }
    Ok(if out == s { Cow::Borrowed(s) } else { out })
}

/// Strips one final label separator (RFC 7622 §3.2).
fn strip_trailing_dot(s: &str) -> &str {
    for dot in ['.', '\u{3002}', '\u{FF0E}', '\u{FF61}'] {
        if let Some(stripped) = s.strip_suffix(dot) {
            return stripped;
        }
    }
    s
}

/// Validates an `IP-literal` (RFC 3986 §3.2.2 / RFC 6874) holding an IPv6 address and
/// normalizes it to the canonical RFC 5952 text form.
fn prep_ip_literal(s: &str) -> Result<Cow<'_, str>, JidError> {
    let addr = s
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
        .ok_or(JidError::BadDomain)?;
    let canonical = format!("[{addr}]");
    if canonical == s {
        Ok(Cow::Borrowed(s))
    } else {
        Ok(Cow::Owned(canonical))
    }
}

/// Classifies plain ASCII host names that UTS #46 processing would at most lowercase:
/// non-empty labels of ASCII letters, digits and inner hyphens, none of which is an
/// A-label candidate (`xn--`). Returns `Some(has_uppercase)` for such names, so the
/// IDNA machinery can be skipped, and `None` for anything else.
fn plain_ascii_hostname(s: &str) -> Option<bool> {
    let mut has_upper = false;
    for label in s.split('.') {
        let b = label.as_bytes();
        let (&first, &last) = (b.first()?, b.last()?);
        if first == b'-' || last == b'-' || (b.len() >= 4 && b[..4].eq_ignore_ascii_case(b"xn--")) {
            return None;
        }
        for &c in b {
            if c.is_ascii_uppercase() {
                has_upper = true;
            } else if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-') {
                return None;
            }
        }
    }
    Some(has_upper)
}

#[cfg(test)]
mod tests;
