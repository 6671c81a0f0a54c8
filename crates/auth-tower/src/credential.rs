//! Where a request's credential comes from.

use std::fmt;

use auth_core::{AuthError, RejectReason};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};
use zeroize::Zeroizing;

/// One place a credential may be found. [`AuthLayerBuilder::sources`](crate::AuthLayerBuilder::sources)
/// sets the order in which they are tried; the first one present is used and
/// the others are ignored.
///
/// Every source treats a credential it cannot read (duplicate headers,
/// non-ASCII bytes, an empty token) as malformed: 401 with
/// `error="invalid_token"`, never a fall-through to the next source.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialSource {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1). The scheme is matched
    /// case-insensitively; another scheme (e.g. `Basic`) counts as no
    /// credential. Two `Authorization` headers are malformed.
    Bearer,
    /// On WebSocket upgrade requests only: `Sec-WebSocket-Protocol: Bearer, <token>`,
    /// the one header a browser's `WebSocket` API can set. The entry after
    /// `Bearer` (matched case-insensitively) is the token.
    WebSocketProtocol,
    /// A custom header holding the bare token, e.g. `X-Api-Key`. Sent twice is malformed.
    Header(HeaderName),
    /// A query parameter holding the token, e.g. `?api_key=…`.
    ///
    /// **Weaker**: URLs end up in browser history, proxy and server access
    /// logs and `Referer` headers. Use it only for clients that cannot set
    /// headers. The layer's audit events record the path only, and
    /// [`AuthMakeSpan`](crate::AuthMakeSpan) keeps the query out of spans, but
    /// other software on the path may log it.
    Query(Box<str>),
}

impl CredentialSource {
    /// A custom header such as `x-api-key`.
    pub fn header(name: HeaderName) -> Self {
        Self::Header(name)
    }

    /// A query parameter such as `api_key` (see the warning on [`CredentialSource::Query`]).
    pub fn query(name: impl Into<Box<str>>) -> Self {
        Self::Query(name.into())
    }

    /// The credential this source finds in the request, if any.
    pub(crate) fn find<'a>(
        &self,
        method: &Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
    ) -> Result<Option<Token<'a>>, AuthError> {
        match self {
            Self::Bearer => bearer(headers),
            Self::WebSocketProtocol if is_websocket_upgrade(method, headers) => {
                websocket_protocol(headers)
            }
            Self::WebSocketProtocol => Ok(None),
            Self::Header(name) => Ok(single(headers, name)?.map(|v| Token::Raw(v.trim_ascii()))),
            Self::Query(name) => query(uri, name),
        }
    }
}

impl fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bearer => f.write_str("Bearer"),
            Self::WebSocketProtocol => f.write_str("WebSocketProtocol"),
            Self::Header(n) => write!(f, "Header({n})"),
            Self::Query(n) => write!(f, "Query({n})"),
        }
    }
}

/// A credential read from a request.
pub(crate) enum Token<'a> {
    /// A header's bytes, trimmed, characters not yet checked: a token the
    /// verifier's cache knows needs no check (it is that token), and
    /// [`Token::as_str`] checks any other.
    Raw(&'a [u8]),
    /// Checked text.
    Borrowed(&'a str),
    /// A checked, percent-decoded copy, zeroed on drop.
    Decoded(Zeroizing<String>),
}

impl Token<'_> {
    /// The bytes, unchecked.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Raw(b) => b,
            Self::Borrowed(s) => s.as_bytes(),
            Self::Decoded(s) => s.as_bytes(),
        }
    }

    /// The token as text: visible ASCII with no spaces, else malformed.
    pub(crate) fn as_str(&self) -> Result<&str, AuthError> {
        match self {
            Self::Raw(b) => token(b),
            Self::Borrowed(s) => Ok(s),
            Self::Decoded(s) => Ok(s),
        }
    }
}

/// The credentials in `headers`/`uri`, from the first source that has one.
pub(crate) fn find_credential<'a>(
    sources: &[CredentialSource],
    method: &Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
) -> Result<Option<Token<'a>>, AuthError> {
    for source in sources {
        if let Some(token) = source.find(method, uri, headers)? {
            return Ok(Some(token));
        }
    }
    Ok(None)
}

fn malformed() -> AuthError {
    AuthError::unauthorized(RejectReason::Malformed)
}

/// The header's only value; a second one is malformed.
pub(crate) fn single<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a [u8]>, AuthError> {
    // No name repeats (the common case): one lookup, no second value to look for.
    if headers.len() == headers.keys_len() {
        return Ok(headers.get(name).map(HeaderValue::as_bytes));
    }
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => Ok(Some(v.as_bytes())),
        (Some(_), Some(_)) => Err(malformed()),
    }
}

/// A token: not empty, visible ASCII with no spaces, after trimming
/// surrounding whitespace.
fn token(raw: &[u8]) -> Result<&str, AuthError> {
    let raw = raw.trim_ascii();
    // No early exit, so that the check compiles to a vector loop.
    let visible = raw.iter().fold(true, |ok, b| ok & b.is_ascii_graphic());
    if raw.is_empty() || !visible {
        return Err(malformed());
    }
    // All bytes are ASCII, so this cannot fail; a failure is still just malformed.
    std::str::from_utf8(raw).map_err(|_| malformed())
}

fn bearer(headers: &HeaderMap) -> Result<Option<Token<'_>>, AuthError> {
    let Some(value) = single(headers, &header::AUTHORIZATION)? else {
        return Ok(None);
    };
    // The scheme is the text up to the first space.
    match value.trim_ascii_start().split_at_checked(SCHEME.len()) {
        Some((scheme, rest)) if is_bearer(scheme) && matches!(rest.first(), None | Some(b' ')) => {
            Ok(Some(Token::Raw(rest.trim_ascii())))
        }
        // Another scheme: not a credential this layer reads (RFC 6750 §3.1).
        _ => Ok(None),
    }
}

const SCHEME: &[u8; 6] = b"bearer";

/// `Bearer` in any case: every letter of it, with the case bit set, is the
/// lowercase letter (and no other byte is).
fn is_bearer(scheme: &[u8]) -> bool {
    scheme.iter().zip(SCHEME).all(|(b, l)| b | 0x20 == *l)
}

/// HTTP/1.1 `Upgrade: websocket`, or an HTTP/2 extended CONNECT (RFC 8441).
pub(crate) fn is_websocket_upgrade(method: &Method, headers: &HeaderMap) -> bool {
    *method == Method::CONNECT
        || headers
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// The entries of every `Sec-WebSocket-Protocol` header, trimmed.
fn protocols(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
}

fn websocket_protocol(headers: &HeaderMap) -> Result<Option<Token<'_>>, AuthError> {
    let mut entries = protocols(headers);
    let mut found = None;
    while let Some(entry) = entries.next() {
        if entry.eq_ignore_ascii_case(b"bearer") {
            if found.is_some() {
                return Err(malformed());
            }
            found = Some(token(entries.next().unwrap_or_default())?);
        }
    }
    Ok(found.map(Token::Borrowed))
}

/// The `Bearer` entry of the client's `Sec-WebSocket-Protocol` list, spelled as
/// the client spelled it: the subprotocol a server must select so that a
/// browser accepts the handshake. Never the token.
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// headers.insert("sec-websocket-protocol", "bearer, st_abc".parse().unwrap());
/// assert_eq!(auth_tower::offered_bearer_protocol(&headers), Some("bearer"));
/// ```
pub fn offered_bearer_protocol(headers: &HeaderMap) -> Option<&str> {
    protocols(headers)
        .find(|p| p.eq_ignore_ascii_case(b"bearer"))
        .and_then(|p| std::str::from_utf8(p).ok())
}

fn query<'a>(uri: &'a Uri, name: &str) -> Result<Option<Token<'a>>, AuthError> {
    let Some(q) = uri.query() else {
        return Ok(None);
    };
    let mut found = None;
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        if k != name {
            continue;
        }
        if found.is_some() {
            return Err(malformed());
        }
        found = Some(v);
    }
    let Some(v) = found else {
        return Ok(None);
    };
    let checked = token(v.as_bytes())?.len();
    if checked != v.len() {
        // Surrounding whitespace is not part of a token in a URL.
        return Err(malformed());
    }
    Ok(Some(match v {
        std::borrow::Cow::Borrowed(s) => Token::Borrowed(s),
        std::borrow::Cow::Owned(s) => Token::Decoded(Zeroizing::new(s)),
    }))
}

#[cfg(test)]
mod tests {

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn find(
        sources: &[CredentialSource],
        method: Method,
        uri: &str,
        h: &[(&str, &str)],
    ) -> Result<Option<String>, RejectReason> {
        let uri: Uri = uri.parse().unwrap();
        let h = headers(h);
        find_credential(sources, &method, &uri, &h)
            .and_then(|t| t.map(|t| t.as_str().map(str::to_owned)).transpose())
            .map_err(|e| e.reason())
    }

    const ALL: &[CredentialSource] = &[
        CredentialSource::Bearer,
        CredentialSource::WebSocketProtocol,
    ];

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer tok", "bearer tok", "BEARER   tok ", "  Bearer tok"] {
            assert_eq!(
                find(ALL, Method::GET, "/", &[("authorization", v)]),
                Ok(Some("tok".into())),
                "{v}"
            );
        }
    }

    #[test]
    fn other_schemes_are_no_credential() {
        assert_eq!(
            find(ALL, Method::GET, "/", &[("authorization", "Basic dTpw")]),
            Ok(None)
        );
        assert_eq!(
            find(ALL, Method::GET, "/", &[("authorization", "Bearertok")]),
            Ok(None)
        );
    }

    #[test]
    fn malformed_bearer_values() {
        for v in ["Bearer", "Bearer ", "Bearer a b"] {
            assert_eq!(
                find(ALL, Method::GET, "/", &[("authorization", v)]),
                Err(RejectReason::Malformed),
                "{v:?}"
            );
        }
        let two = [("authorization", "Bearer a"), ("authorization", "Bearer a")];
        assert_eq!(
            find(ALL, Method::GET, "/", &two),
            Err(RejectReason::Malformed)
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer t\xffk").unwrap(),
        );
        let uri = Uri::from_static("/");
        assert_eq!(
            find_credential(ALL, &Method::GET, &uri, &h)
                .and_then(|t| t.map(|t| t.as_str().map(str::to_owned)).transpose())
                .err()
                .map(|e| e.reason()),
            Some(RejectReason::Malformed)
        );
    }

    #[test]
    fn websocket_protocol_only_on_upgrades() {
        let ws = [
            ("upgrade", "websocket"),
            ("sec-websocket-protocol", "Bearer, tok"),
        ];
        assert_eq!(find(ALL, Method::GET, "/", &ws), Ok(Some("tok".into())));
        assert_eq!(find(ALL, Method::GET, "/", &ws[1..]), Ok(None));
        let split = [
            ("upgrade", "WebSocket"),
            ("sec-websocket-protocol", "chat, bearer"),
            ("sec-websocket-protocol", "tok"),
        ];
        assert_eq!(find(ALL, Method::GET, "/", &split), Ok(Some("tok".into())));
        let dangling = [
            ("upgrade", "websocket"),
            ("sec-websocket-protocol", "chat, Bearer"),
        ];
        assert_eq!(
            find(ALL, Method::GET, "/", &dangling),
            Err(RejectReason::Malformed)
        );
        let twice = [
            ("upgrade", "websocket"),
            ("sec-websocket-protocol", "bearer, a, bearer, b"),
        ];
        assert_eq!(
            find(ALL, Method::GET, "/", &twice),
            Err(RejectReason::Malformed)
        );
    }

    #[test]
    fn offered_protocol_keeps_client_spelling() {
        let h = headers(&[("sec-websocket-protocol", "chat, BeArEr, tok")]);
        assert_eq!(offered_bearer_protocol(&h), Some("BeArEr"));
        assert_eq!(
            offered_bearer_protocol(&headers(&[("sec-websocket-protocol", "chat")])),
            None
        );
    }

    #[test]
    fn order_decides_and_first_present_wins() {
        let key = CredentialSource::header(HeaderName::from_static("x-api-key"));
        let both = [("authorization", "Bearer a"), ("x-api-key", "b")];
        let bearer_first = [CredentialSource::Bearer, key.clone()];
        let key_first = [key.clone(), CredentialSource::Bearer];
        assert_eq!(
            find(&bearer_first, Method::GET, "/", &both),
            Ok(Some("a".into()))
        );
        assert_eq!(
            find(&key_first, Method::GET, "/", &both),
            Ok(Some("b".into()))
        );
        assert_eq!(
            find(&key_first, Method::GET, "/", &both[..1]),
            Ok(Some("a".into()))
        );
        let dup = [("x-api-key", "b"), ("x-api-key", "b")];
        assert_eq!(
            find(&key_first, Method::GET, "/", &dup),
            Err(RejectReason::Malformed)
        );
    }

    #[test]
    fn query_parameter() {
        let q = [CredentialSource::query("api_key")];
        assert_eq!(
            find(&q, Method::GET, "/x?a=1&api_key=tok", &[]),
            Ok(Some("tok".into()))
        );
        assert_eq!(
            find(&q, Method::GET, "/x?api_key=t%5Fk", &[]),
            Ok(Some("t_k".into()))
        );
        assert_eq!(find(&q, Method::GET, "/x?a=1", &[]), Ok(None));
        assert_eq!(find(&q, Method::GET, "/x", &[]), Ok(None));
        for bad in [
            "/x?api_key=",
            "/x?api_key=a&api_key=a",
            "/x?api_key=a+b",
            "/x?api_key=%20a",
        ] {
            assert_eq!(
                find(&q, Method::GET, bad, &[]),
                Err(RejectReason::Malformed),
                "{bad}"
            );
        }
        // Not listed, not read.
        assert_eq!(find(ALL, Method::GET, "/x?api_key=tok", &[]), Ok(None));
    }

    #[test]
    fn debug_names_sources() {
        let s = format!(
            "{:?}",
            [CredentialSource::Bearer, CredentialSource::query("k")]
        );
        assert_eq!(s, "[Bearer, Query(k)]");
    }
}
