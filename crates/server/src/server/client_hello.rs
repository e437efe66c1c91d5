//! Reading a TLS ClientHello just far enough to decide which TLS library serves the client.
//!
//! With `--legacy-tls`, port 3804 answers both kinds of phones: rustls serves every client
//! it can complete a handshake with, and OpenSSL (security level 0) serves the rest, which are
//! the phones that speak only TLS 1.0/1.1, RSA key exchange or CBC suites. The decision needs
//! what the client offers: its highest version, cipher suites, key-exchange groups and
//! signature schemes. Nothing here does I/O; the caller reads bytes, keeps them, and replays
//! them to whichever library takes the connection.
//!
//! Every listener reads the ClientHello this way, so a refused handshake is logged with what
//! the client offered ([`describe`]): operators see which phones cannot talk to capf and why.
//!
//! Every function is total: arbitrary bytes give [`Inspect::NeedMore`] or a verdict, never a
//! panic.

/// TLS record content type of handshake messages.
const HANDSHAKE: u8 = 22;
/// Handshake message type of the ClientHello.
const CLIENT_HELLO: u8 = 1;
/// Largest record payload TLS allows (plaintext 2^14; a little slack for broken clients).
const MAX_RECORD: usize = 16384 + 256;
/// Largest ClientHello we wait for. Real ones are a few hundred bytes (a couple of KiB with
/// post-quantum key shares); anything larger goes to rustls, which refuses it as before.
pub const MAX_HELLO: usize = 32 * 1024;

const TLS1_2: u16 = 0x0303;
const TLS1_3: u16 = 0x0304;
const EXT_SUPPORTED_GROUPS: u16 = 10;
const EXT_SIGNATURE_ALGORITHMS: u16 = 13;
const EXT_SUPPORTED_VERSIONS: u16 = 43;

/// What a client offers in its ClientHello, as far as choosing the library goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Offer {
    /// `client_version` (`legacy_version` in TLS 1.3).
    pub client_version: u16,
    /// The supported_versions extension, when present (TLS 1.3 clients).
    pub supported_versions: Option<Vec<u16>>,
    pub cipher_suites: Vec<u16>,
    /// The supported_groups extension, when present.
    pub groups: Option<Vec<u16>>,
    /// The signature_algorithms extension, when present.
    pub signature_schemes: Option<Vec<u16>>,
}

impl Offer {
    /// Whether the client is willing to speak `version`. Without supported_versions the
    /// client version is the highest one and every lower one is implied.
    pub fn offers(&self, version: u16) -> bool {
        match &self.supported_versions {
            Some(versions) => versions.contains(&version),
            None => version <= TLS1_2 && self.client_version >= version,
        }
    }
}

/// Outcome of looking at the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspect {
    /// The ClientHello is not complete yet.
    NeedMore,
    /// A complete, well-formed TLS ClientHello.
    Hello(Offer),
    /// An SSL 2.0-format ClientHello (old OpenSSL clients send one to negotiate TLS 1.0):
    /// rustls cannot parse it, OpenSSL can.
    Sslv2Hello,
    /// Not a TLS ClientHello, or a malformed one.
    NotTls,
}

/// What the client sent, for the log of a refused handshake: versions and cipher suites (by
/// their IANA numbers), groups and signature schemes.
pub fn describe(inspected: &Inspect) -> String {
    let hex = |values: &[u16]| {
        values
            .iter()
            .map(|v| format!("{v:04x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match inspected {
        Inspect::Hello(offer) => {
            let versions = match &offer.supported_versions {
                Some(versions) => hex(versions),
                None => format!("up to {:04x}", offer.client_version),
            };
            format!(
                "a ClientHello offering versions [{versions}], suites [{}], groups [{}], \
                 signature schemes [{}]",
                hex(&offer.cipher_suites),
                offer.groups.as_deref().map(hex).unwrap_or_default(),
                offer
                    .signature_schemes
                    .as_deref()
                    .map(hex)
                    .unwrap_or_default(),
            )
        }
        Inspect::Sslv2Hello => "an SSL 2.0-format ClientHello".into(),
        Inspect::NotTls => "no TLS ClientHello".into(),
        Inspect::NeedMore => "an oversized ClientHello".into(),
    }
}

/// Looks at the first bytes a client sent. Handshake messages may be split over several
/// records; they are joined before parsing.
pub fn inspect(bytes: &[u8]) -> Inspect {
    let Some(&first) = bytes.first() else {
        return Inspect::NeedMore;
    };
    if first & 0x80 != 0 {
        // SSL 2.0 record: 2-byte length with the high bit set, then the message type.
        return match bytes.get(2) {
            None => Inspect::NeedMore,
            Some(&CLIENT_HELLO) => Inspect::Sslv2Hello,
            Some(_) => Inspect::NotTls,
        };
    }
    let mut handshake = Vec::new();
    let mut rest = bytes;
    loop {
        if rest.is_empty() {
            return Inspect::NeedMore;
        }
        if rest[0] != HANDSHAKE {
            return Inspect::NotTls;
        }
        let Some(header) = rest.get(..5) else {
            return Inspect::NeedMore;
        };
        // Record versions 3.x only (SSL 3.0 to TLS 1.2 all write 3.x here).
        if header[1] != 3 {
            return Inspect::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Inspect::NotTls;
        }
        let Some(payload) = rest.get(5..5 + len) else {
            return Inspect::NeedMore;
        };
        handshake.extend_from_slice(payload);
        rest = &rest[5 + len..];
        if handshake[0] != CLIENT_HELLO {
            return Inspect::NotTls;
        }
        let Some(length) = handshake.get(1..4) else {
            continue;
        };
        let body_len =
            usize::from(length[0]) << 16 | usize::from(length[1]) << 8 | usize::from(length[2]);
        if 4 + body_len > MAX_HELLO {
            return Inspect::NotTls;
        }
        if let Some(body) = handshake.get(4..4 + body_len) {
            return match parse_client_hello(body) {
                Some(offer) => Inspect::Hello(offer),
                None => Inspect::NotTls,
            };
        }
    }
}

/// A cursor over a byte slice whose reads fail instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A list of 16-bit values; an odd length is malformed.
fn u16_list(bytes: &[u8]) -> Option<Vec<u16>> {
    if bytes.len() % 2 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect(),
    )
}

/// The ClientHello body (RFC 5246 7.4.1.2, RFC 8446 4.1.2).
fn parse_client_hello(body: &[u8]) -> Option<Offer> {
    let mut r = Reader(body);
    let client_version = r.u16()?;
    r.take(32)?; // random
    r.vec8()?; // session id
    let cipher_suites = u16_list(r.vec16()?)?;
    r.vec8()?; // compression methods
    let mut offer = Offer {
        client_version,
        cipher_suites,
        ..Offer::default()
    };
    // TLS 1.0 clients may end the hello here: no extensions at all.
    if r.is_empty() {
        return Some(offer);
    }
    let mut extensions = Reader(r.vec16()?);
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        let mut data = Reader(extensions.vec16()?);
        match kind {
            EXT_SUPPORTED_VERSIONS => offer.supported_versions = Some(u16_list(data.vec8()?)?),
            EXT_SUPPORTED_GROUPS => offer.groups = Some(u16_list(data.vec16()?)?),
            EXT_SIGNATURE_ALGORITHMS => offer.signature_schemes = Some(u16_list(data.vec16()?)?),
            _ => {}
        }
    }
    Some(offer)
}

/// What rustls, as configured for the CAPF identity, can serve.
#[derive(Debug, Clone, Default)]
pub struct ModernProfile {
    pub tls12_suites: Vec<u16>,
    pub tls13_suites: Vec<u16>,
    pub groups: Vec<u16>,
    /// Signature schemes the CAPF key can sign a TLS 1.2 handshake with.
    pub tls12_schemes: Vec<u16>,
    /// ... and a TLS 1.3 one.
    pub tls13_schemes: Vec<u16>,
}

/// Which library takes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Modern,
    /// OpenSSL, with the reason rustls could not serve the client (logged).
    Legacy(&'static str),
}

impl ModernProfile {
    /// rustls takes every client it can complete a handshake with (to the extent the
    /// ClientHello tells) and every byte stream that is not a TLS ClientHello at all (it
    /// refuses those exactly as a rustls-only listener does); OpenSSL takes the rest.
    pub fn route(&self, inspected: &Inspect) -> Route {
        match inspected {
            Inspect::Hello(offer) => self.route_offer(offer),
            Inspect::Sslv2Hello => Route::Legacy("SSL 2.0-format ClientHello"),
            Inspect::NeedMore | Inspect::NotTls => Route::Modern,
        }
    }

    fn route_offer(&self, offer: &Offer) -> Route {
        let common = |ours: &[u16], theirs: Option<&Vec<u16>>| {
            theirs.is_some_and(|t| t.iter().any(|x| ours.contains(x)))
        };
        let mut reason = "offers neither TLS 1.2 nor TLS 1.3";
        for (version, suites, schemes) in [
            (TLS1_3, &self.tls13_suites, &self.tls13_schemes),
            (TLS1_2, &self.tls12_suites, &self.tls12_schemes),
        ] {
            if !offer.offers(version) {
                continue;
            }
            // Checked in the order rustls fails, so the logged reason is the first obstacle.
            if !offer.cipher_suites.iter().any(|s| suites.contains(s)) {
                reason = "no cipher suite in common with rustls (RSA key exchange or CBC only)";
            } else if !common(&self.groups, offer.groups.as_ref()) {
                reason = "no ECDHE group in common with rustls";
            } else if !common(schemes, offer.signature_schemes.as_ref()) {
                reason = "no signature scheme rustls can use with the CAPF key";
            } else {
                return Route::Modern;
            }
        }
        Route::Legacy(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wraps a ClientHello body in a handshake header and one record.
    fn record(body: &[u8]) -> Vec<u8> {
        let mut hs = vec![CLIENT_HELLO];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(body);
        let mut rec = vec![HANDSHAKE, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    fn hello(version: u16, suites: &[u16], extensions: Option<Vec<u8>>) -> Vec<u8> {
        let mut body = version.to_be_bytes().to_vec();
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
        for s in suites {
            body.extend_from_slice(&s.to_be_bytes());
        }
        body.extend_from_slice(&[1, 0]);
        if let Some(ext) = extensions {
            body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
            body.extend_from_slice(&ext);
        }
        record(&body)
    }

    fn ext(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        out
    }

    fn list16(values: &[u16]) -> Vec<u8> {
        let mut out = ((values.len() * 2) as u16).to_be_bytes().to_vec();
        for v in values {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out
    }

    fn profile() -> ModernProfile {
        ModernProfile {
            tls12_suites: vec![0xc02f],
            tls13_suites: vec![0x1301],
            groups: vec![0x001d, 0x0017],
            tls12_schemes: vec![0x0401, 0x0804],
            tls13_schemes: vec![0x0804],
        }
    }

    /// TLS_RSA_WITH_AES_128_CBC_SHA, as 79xx phones offer.
    const AES128_SHA: u16 = 0x002f;

    #[test]
    fn tls10_rsa_hello_without_extensions_goes_to_openssl() {
        let bytes = hello(0x0301, &[AES128_SHA, 0x0035], None);
        let inspected = inspect(&bytes);
        let Inspect::Hello(offer) = &inspected else {
            panic!("{inspected:?}")
        };
        assert_eq!(offer.client_version, 0x0301);
        assert_eq!(offer.cipher_suites, [AES128_SHA, 0x0035]);
        assert!(matches!(profile().route(&inspected), Route::Legacy(_)));
    }

    #[test]
    fn modern_tls12_hello_goes_to_rustls_and_each_gap_to_openssl() {
        let full = |suites: &[u16], groups: &[u16], schemes: &[u16]| {
            let mut e = ext(EXT_SUPPORTED_GROUPS, &list16(groups));
            e.extend(ext(EXT_SIGNATURE_ALGORITHMS, &list16(schemes)));
            profile().route(&inspect(&hello(0x0303, suites, Some(e))))
        };
        assert_eq!(
            full(&[AES128_SHA, 0xc02f], &[0x0017], &[0x0401]),
            Route::Modern
        );
        assert!(
            matches!(full(&[AES128_SHA], &[0x0017], &[0x0401]), Route::Legacy(r) if r.contains("cipher suite"))
        );
        assert!(
            matches!(full(&[0xc02f], &[0x0019], &[0x0401]), Route::Legacy(r) if r.contains("group"))
        );
        assert!(
            matches!(full(&[0xc02f], &[0x0017], &[0x0201]), Route::Legacy(r) if r.contains("signature"))
        );
        // TLS 1.1 with modern suites is still beyond rustls.
        let mut e = ext(EXT_SUPPORTED_GROUPS, &list16(&[0x0017]));
        e.extend(ext(EXT_SIGNATURE_ALGORITHMS, &list16(&[0x0401])));
        assert!(matches!(
            profile().route(&inspect(&hello(0x0302, &[0xc02f], Some(e)))),
            Route::Legacy(r) if r.contains("neither")
        ));
    }

    #[test]
    fn tls13_hello_uses_supported_versions() {
        let mut e = ext(EXT_SUPPORTED_VERSIONS, &[2, 0x03, 0x04]);
        e.extend(ext(EXT_SUPPORTED_GROUPS, &list16(&[0x001d])));
        e.extend(ext(EXT_SIGNATURE_ALGORITHMS, &list16(&[0x0804])));
        let inspected = inspect(&hello(0x0303, &[0x1301], Some(e)));
        let Inspect::Hello(offer) = &inspected else {
            panic!("{inspected:?}")
        };
        assert!(offer.offers(TLS1_3) && !offer.offers(TLS1_2));
        assert_eq!(profile().route(&inspected), Route::Modern);
    }

    #[test]
    fn fragmented_and_truncated_hellos() {
        let bytes = hello(0x0301, &[AES128_SHA], None);
        let whole = inspect(&bytes);
        for cut in 0..bytes.len() {
            assert_eq!(inspect(&bytes[..cut]), Inspect::NeedMore, "cut at {cut}");
        }
        // The same handshake message split over two records.
        let hs = &bytes[5..];
        let mut split = Vec::new();
        for part in [&hs[..10], &hs[10..]] {
            split.extend_from_slice(&[HANDSHAKE, 3, 1]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        assert_eq!(inspect(&split), whole);
    }

    #[test]
    fn other_bytes() {
        assert_eq!(inspect(b"GET / HTTP/1.1\r\n"), Inspect::NotTls);
        assert_eq!(
            inspect(&[0x80, 0x2e, 0x01, 0x03, 0x01]),
            Inspect::Sslv2Hello
        );
        assert!(matches!(
            profile().route(&Inspect::Sslv2Hello),
            Route::Legacy(_)
        ));
        assert_eq!(profile().route(&Inspect::NotTls), Route::Modern);
        // An alert record, an empty record, a record of the wrong major version.
        assert_eq!(inspect(&[21, 3, 1, 0, 2, 2, 40]), Inspect::NotTls);
        assert_eq!(inspect(&[22, 3, 1, 0, 0]), Inspect::NotTls);
        assert_eq!(inspect(&[22, 2, 0, 0, 4, 1, 0, 0, 0]), Inspect::NotTls);
        // A hello whose declared length exceeds what we wait for.
        assert_eq!(
            inspect(&[22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]),
            Inspect::NotTls
        );
        // Extensions whose lengths lie.
        let mut bytes = hello(0x0303, &[0xc02f], Some(vec![0, 10, 0, 9, 0, 2]));
        assert_eq!(inspect(&bytes), Inspect::NotTls);
        bytes.truncate(5);
        assert_eq!(inspect(&bytes), Inspect::NeedMore);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let inspected = inspect(&bytes);
            let _ = profile().route(&inspected);
        }

        #[test]
        fn never_panics_on_mutated_hellos(
            flips in proptest::collection::vec((0usize..200, proptest::prelude::any::<u8>()), 1..8)
        ) {
            let mut e = ext(EXT_SUPPORTED_GROUPS, &list16(&[0x0017]));
            e.extend(ext(EXT_SIGNATURE_ALGORITHMS, &list16(&[0x0401])));
            let mut bytes = hello(0x0303, &[0xc02f, AES128_SHA], Some(e));
            for (at, value) in flips {
                if let Some(b) = bytes.get_mut(at) {
                    *b = value;
                }
            }
            let _ = profile().route(&inspect(&bytes));
        }
    }
}
