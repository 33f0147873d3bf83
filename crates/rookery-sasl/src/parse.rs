//! Strict parsers for the client messages of SCRAM (RFC 5802 §7) and PLAIN
//! (RFC 4616 §2).
//!
//! Every client message is checked here before rsasl sees it, for two reasons:
//! the username has to be known before rsasl runs (its callbacks are
//! synchronous while the credential lookup is not), and rsasl 2.3's SCRAM
//! parser slices attributes without checking their length, so a message such
//! as `n,a,n=u,r=x` would make it panic.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A client message that does not follow the grammar. Maps to
/// `malformed-request` (RFC 6120 §6.5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// Upper bound for any single client message; far above what a legitimate
/// SCRAM or PLAIN message needs.
pub(crate) const MAX_MESSAGE_LEN: usize = 8 * 1024;

/// The `gs2-cbind-flag` of RFC 5802 §7.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CbindFlag {
    /// `n`: the client does not support channel binding.
    NotSupported,
    /// `y`: the client supports channel binding but thinks the server does not.
    ClientOnly,
    /// `p=<cb-name>`: the client requires channel binding of that type.
    Required(String),
}

/// A parsed `client-first-message` (RFC 5802 §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientFirst {
    pub(crate) cbind: CbindFlag,
    /// The `a=` authorization identity, unescaped.
    pub(crate) authzid: Option<String>,
    /// The `n=` username exactly as sent (still escaped); rsasl reports this
    /// form as the authentication identity.
    pub(crate) username_raw: String,
    /// The `n=` username with `=2C` / `=3D` unescaped.
    pub(crate) username: String,
    /// The client nonce (`c-nonce`).
    pub(crate) nonce: String,
}

/// A parsed `client-final-message` (RFC 5802 §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientFinal {
    /// The full nonce (`c-nonce` followed by `s-nonce`).
    pub(crate) nonce: String,
}

/// A parsed PLAIN message (RFC 4616 §2): `[authzid] NUL authcid NUL passwd`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PlainMessage {
    pub(crate) authzid: Option<String>,
    pub(crate) authcid: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for PlainMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainMessage")
            .field("authzid", &self.authzid)
            .field("authcid", &self.authcid)
            .finish_non_exhaustive()
    }
}

fn as_utf8(input: &[u8]) -> Result<&str, Malformed> {
    if input.is_empty() || input.len() > MAX_MESSAGE_LEN || input.contains(&0) {
        return Err(Malformed);
    }
    std::str::from_utf8(input).map_err(|_| Malformed)
}

/// `printable = %x21-2B / %x2D-7E`, at least one.
fn is_printable(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, 0x21..=0x2B | 0x2D..=0x7E))
}

/// `cb-name = 1*(ALPHA / DIGIT / "." / "-")`.
fn is_cb_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// `attr-val = ALPHA "=" value`, `value = 1*value-char` (any UTF-8 except NUL
/// and ","; the caller has already split on "," and rejected NUL).
fn is_attr_val(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b'='
}

/// Decode a `saslname` (RFC 5802 §7): at least one character, "," never
/// appears, and "=" only as `=2C` (",") or `=3D` ("="); anything else after
/// "=" MUST fail the authentication (RFC 5802 §5.1, attribute `n`).
fn decode_saslname(s: &str) -> Result<String, Malformed> {
    if s.is_empty() {
        return Err(Malformed);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('=') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("2C") {
            out.push(',');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("3D") {
            out.push('=');
            rest = tail;
        } else {
            return Err(Malformed);
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Decode `base64` (RFC 5802 §7: padded, standard alphabet).
pub(crate) fn decode_base64(s: &str) -> Result<Vec<u8>, Malformed> {
    STANDARD.decode(s).map_err(|_| Malformed)
}

/// Parse a `client-first-message`:
///
/// ```text
/// client-first-message = gs2-header client-first-message-bare
/// gs2-header           = gs2-cbind-flag "," [ authzid ] ","
/// client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
/// ```
///
/// A `reserved-mext` (`m=`) is refused: no mandatory extension is supported
/// (RFC 5802 §5.1, attribute `m`).
pub(crate) fn client_first(input: &[u8]) -> Result<ClientFirst, Malformed> {
    let text = as_utf8(input)?;
    let mut parts = text.split(',');

    let cbind = match parts.next().ok_or(Malformed)? {
        "n" => CbindFlag::NotSupported,
        "y" => CbindFlag::ClientOnly,
        flag => match flag.strip_prefix("p=") {
            Some(name) if is_cb_name(name) => CbindFlag::Required(name.to_owned()),
            _ => return Err(Malformed),
        },
    };

    let authzid = match parts.next().ok_or(Malformed)? {
        "" => None,
        a => Some(decode_saslname(a.strip_prefix("a=").ok_or(Malformed)?)?),
    };

    let username_raw = parts
        .next()
        .and_then(|p| p.strip_prefix("n="))
        .ok_or(Malformed)?;
    let username = decode_saslname(username_raw)?;

    let nonce = parts
        .next()
        .and_then(|p| p.strip_prefix("r="))
        .ok_or(Malformed)?;
    if !is_printable(nonce) {
        return Err(Malformed);
    }

    // Optional extensions must at least be well-formed attributes.
    for ext in parts {
        if !is_attr_val(ext) {
            return Err(Malformed);
        }
    }

    Ok(ClientFirst {
        cbind,
        authzid,
        username_raw: username_raw.to_owned(),
        username,
        nonce: nonce.to_owned(),
    })
}

/// Parse a `client-final-message`:
///
/// ```text
/// client-final-message-without-proof = channel-binding "," nonce ["," extensions]
/// client-final-message = client-final-message-without-proof "," proof
/// ```
///
/// `c=` and `p=` must be valid base64 and the proof must have the length of
/// the hash output (`hash_len`); the values themselves are checked by the
/// SCRAM implementation.
pub(crate) fn client_final(input: &[u8], hash_len: usize) -> Result<ClientFinal, Malformed> {
    let text = as_utf8(input)?;
    let parts: Vec<&str> = text.split(',').collect();
    if parts.len() < 3 {
        return Err(Malformed);
    }

    let cbind = parts[0].strip_prefix("c=").ok_or(Malformed)?;
    if decode_base64(cbind)?.is_empty() {
        return Err(Malformed);
    }

    let nonce = parts[1].strip_prefix("r=").ok_or(Malformed)?;
    if !is_printable(nonce) {
        return Err(Malformed);
    }

    let last = parts.len() - 1;
    for ext in &parts[2..last] {
        if !is_attr_val(ext) {
            return Err(Malformed);
        }
    }

    let proof = parts[last].strip_prefix("p=").ok_or(Malformed)?;
    if decode_base64(proof)?.len() != hash_len {
        return Err(Malformed);
    }

    Ok(ClientFinal {
        nonce: nonce.to_owned(),
    })
}

/// Parse a PLAIN message (RFC 4616 §2):
///
/// ```text
/// message = [authzid] UTF8NUL authcid UTF8NUL passwd
/// ```
///
/// `authcid` and `passwd` must be non-empty; all three are UTF-8 without NUL.
/// An empty `authzid` means none was requested.
pub(crate) fn plain(input: &[u8]) -> Result<PlainMessage, Malformed> {
    if input.len() > MAX_MESSAGE_LEN {
        return Err(Malformed);
    }
    let mut fields = input.split(|b| *b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(Malformed);
    };
    if authcid.is_empty() || password.is_empty() {
        return Err(Malformed);
    }
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| Malformed)
    };
    Ok(PlainMessage {
        authzid: if authzid.is_empty() {
            None
        } else {
            Some(text(authzid)?)
        },
        authcid: text(authcid)?,
        password: text(password)?,
    })
}

/// Extract the full nonce from rsasl's `server-first-message`
/// (`r=<c-nonce><s-nonce>,s=<salt>,i=<count>`).
pub(crate) fn server_first_nonce(message: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(message).ok()?;
    let nonce = text.split(',').next()?.strip_prefix("r=")?;
    is_printable(nonce).then(|| nonce.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saslname_unescaping() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert_eq!(decode_saslname("plain").unwrap(), "plain");
        assert_eq!(decode_saslname("=3D=2C").unwrap(), "=,");
        assert_eq!(decode_saslname(""), Err(Malformed));
        assert_eq!(decode_saslname("a=2"), Err(Malformed));
        assert_eq!(decode_saslname("a="), Err(Malformed));
        assert_eq!(decode_saslname("a=41"), Err(Malformed));
        assert_eq!(decode_saslname("a=2c"), Err(Malformed));
    }

    #[test]
    fn client_first_fields() {
        let m = client_first(b"p=tls-exporter,a=admin=2Cx,n=us=3Der,r=abc,x=ext").unwrap();
        assert_eq!(m.cbind, CbindFlag::Required("tls-exporter".to_owned()));
        assert_eq!(m.authzid.as_deref(), Some("admin,x"));
        assert_eq!(m.username_raw, "us=3Der");
        assert_eq!(m.username, "us=er");
        assert_eq!(m.nonce, "abc");

        let m = client_first(b"y,,n=user,r=x").unwrap();
        assert_eq!(m.cbind, CbindFlag::ClientOnly);
        assert_eq!(m.authzid, None);
    }

    #[test]
    fn client_first_rejects() {
        for bad in [
            &b""[..],
            b"n",
            b"n,",
            b"n,,",
            b"n,,n=user",
            b"n,,n=user,r=",
            b"n,,n=,r=abc",
            b"n,a,n=user,r=abc",
            b"n,b=x,n=user,r=abc",
            b"n,a=,n=user,r=abc",
            b"x,,n=user,r=abc",
            b"p=,,n=user,r=abc",
            b"p=tls_exporter,,n=user,r=abc",
            b"n,,m=ext,n=user,r=abc",
            b"n,,r=abc,n=user",
            b"n,,n=us=er,r=abc",
            b"n,,n=user,r=ab c",
            b"n,,n=user,r=abc,",
            b"n,,n=user,r=abc,x",
            b"n,,n=user,r=abc,1=x",
            b"n,,n=us\0er,r=abc",
            b"n,,n=\xff,r=abc",
        ] {
            assert_eq!(
                client_first(bad),
                Err(Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn client_final_parsing() {
        let proof = STANDARD.encode([7u8; 20]);
        let msg = format!("c=biws,r=abcdef,x=1,p={proof}");
        assert_eq!(client_final(msg.as_bytes(), 20).unwrap().nonce, "abcdef");
        for bad in [
            "c=biws,r=abc".to_owned(),
            format!("c=biws,p={proof}"),
            format!("c=biws,r=abc,p={proof},x=1"),
            format!("c=bi!s,r=abc,p={proof}"),
            format!("c=,r=abc,p={proof}"),
            format!("r=abc,c=biws,p={proof}"),
            "c=biws,r=abc,p=not*base64".to_owned(),
            "c=biws,r=abc,p=AAAA".to_owned(),
            format!("c=biws,r=abc,x,p={proof}"),
            format!("c=biws,r=abc,p={}", STANDARD.encode([7u8; 32])),
        ] {
            assert_eq!(client_final(bad.as_bytes(), 20), Err(Malformed), "{bad}");
        }
    }

    #[test]
    fn plain_parsing() {
        let m = plain(b"\0user\0secret").unwrap();
        assert_eq!(
            (m.authzid, m.authcid.as_str(), m.password.as_str()),
            (None, "user", "secret")
        );
        let m = plain(b"admin@example.org\0user\0secret").unwrap();
        assert_eq!(m.authzid.as_deref(), Some("admin@example.org"));
        for bad in [
            &b""[..],
            b"user",
            b"\0user",
            b"\0\0secret",
            b"\0user\0",
            b"\0user\0secret\0",
            b"\0us\xffer\0secret",
            b"\0user\0sec\xffret",
        ] {
            assert_eq!(plain(bad), Err(Malformed));
        }
    }
}
