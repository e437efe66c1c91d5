//! The certificate authority side of CAPF: the CAPF identity (key + self-signed certificate),
//! the signer seam, LSC issuance, checks on the public keys phones send, and the phone-side key
//! handling used by the simulator and the load generator.
//!
//! Everything here is synchronous and CPU-bound; async callers run it on a blocking pool.
//!
//! Certificates are read and written with a small hand-written DER layer (`der_io` below)
//! because the LSC profile (spec section 6) needs byte-exact control: the issuer name is copied
//! verbatim, extensions come in a fixed order and the SAN "URI" is not a URI.

pub mod identity;
pub mod lsc;
pub mod name_hash;
pub mod phone_key;
pub mod pubkey;
pub mod signer;

pub use identity::{
    CapfIdentity, CapfKeyAlgorithm, IdentityError, IdentityOptions, Loaded, SubjectFields,
};
pub use lsc::{IssueError, IssuedLsc, Issuer};
pub use name_hash::{name_hash, NameError};
pub use phone_key::{PhoneKey, PhoneKeyError};
pub use pubkey::{check_public_key, describe_public_key, PublicKeyError};
pub use signer::{KeySigner, SignError, Signer};

/// Minimal DER reading and writing: single-byte tags, definite minimal lengths.
pub(crate) mod der_io {
    pub(crate) const BOOLEAN: u8 = 0x01;
    pub(crate) const INTEGER: u8 = 0x02;
    pub(crate) const BIT_STRING: u8 = 0x03;
    pub(crate) const OCTET_STRING: u8 = 0x04;
    pub(crate) const NULL: u8 = 0x05;
    pub(crate) const OID: u8 = 0x06;
    pub(crate) const UTF8_STRING: u8 = 0x0c;
    pub(crate) const PRINTABLE_STRING: u8 = 0x13;
    pub(crate) const TELETEX_STRING: u8 = 0x14;
    pub(crate) const IA5_STRING: u8 = 0x16;
    pub(crate) const UTC_TIME: u8 = 0x17;
    pub(crate) const GENERALIZED_TIME: u8 = 0x18;
    pub(crate) const VISIBLE_STRING: u8 = 0x1a;
    pub(crate) const UNIVERSAL_STRING: u8 = 0x1c;
    pub(crate) const BMP_STRING: u8 = 0x1e;
    pub(crate) const SEQUENCE: u8 = 0x30;
    pub(crate) const SET: u8 = 0x31;

    /// One element: its tag, its content and the whole encoding (header included).
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Tlv<'a> {
        pub tag: u8,
        pub value: &'a [u8],
        pub raw: &'a [u8],
    }

    /// Reads one element from the front of `input`; returns it and the rest.
    pub(crate) fn read(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
        let tag = *input.first()?;
        // High tag numbers never occur in the structures we read.
        if tag & 0x1f == 0x1f {
            return None;
        }
        let first = *input.get(1)?;
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2usize)
        } else {
            let count = usize::from(first & 0x7f);
            // 0x80 is BER's indefinite length; more than 4 length bytes is absurd here.
            if count == 0 || count > 4 {
                return None;
            }
            let bytes = input.get(2..2 + count)?;
            if bytes.first() == Some(&0) {
                return None;
            }
            let len = bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            if len < 0x80 {
                return None;
            }
            (len, 2 + count)
        };
        let end = header.checked_add(len)?;
        let raw = input.get(..end)?;
        let value = raw.get(header..)?;
        let rest = input.get(end..)?;
        Some((Tlv { tag, value, raw }, rest))
    }

    /// Reads exactly one element that fills `input`.
    pub(crate) fn read_one(input: &[u8]) -> Option<Tlv<'_>> {
        let (tlv, rest) = read(input)?;
        rest.is_empty().then_some(tlv)
    }

    /// Reads exactly one element with the given tag that fills `input`.
    pub(crate) fn read_one_tagged(input: &[u8], tag: u8) -> Option<Tlv<'_>> {
        read_one(input).filter(|t| t.tag == tag)
    }

    /// Splits `input` into the elements it consists of.
    pub(crate) fn read_all(mut input: &[u8]) -> Option<Vec<Tlv<'_>>> {
        let mut out = Vec::new();
        while !input.is_empty() {
            let (tlv, rest) = read(input)?;
            out.push(tlv);
            input = rest;
        }
        Some(out)
    }

    /// Appends tag, length and `content` to `out`.
    pub(crate) fn write(tag: u8, content: &[u8], out: &mut Vec<u8>) {
        out.push(tag);
        write_len(content.len(), out);
        out.extend_from_slice(content);
    }

    /// Returns tag, length and `content` as a new vector.
    pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(content.len() + 6);
        write(tag, content, &mut out);
        out
    }

    fn write_len(len: usize, out: &mut Vec<u8>) {
        if len < 0x80 {
            // Fits in the short form by the check above.
            out.push(len as u8);
            return;
        }
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or(&[]);
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }

    /// Content octets of a positive INTEGER whose magnitude is `magnitude` (big-endian).
    pub(crate) fn positive_integer_content(magnitude: &[u8]) -> Vec<u8> {
        let skip = magnitude.iter().take_while(|b| **b == 0).count();
        let trimmed = magnitude.get(skip..).unwrap_or(&[]);
        let mut out = Vec::with_capacity(trimmed.len() + 1);
        if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
            out.push(0);
        }
        out.extend_from_slice(trimmed);
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn lengths_round_trip() {
            for len in [0usize, 1, 127, 128, 255, 256, 65535, 65536, 70000] {
                let content = vec![0xabu8; len];
                let enc = tlv(OCTET_STRING, &content);
                let (t, rest) = read(&enc).unwrap();
                assert!(rest.is_empty());
                assert_eq!(t.tag, OCTET_STRING);
                assert_eq!(t.value.len(), len);
                assert_eq!(t.raw, &enc[..]);
            }
        }

        #[test]
        fn rejects_non_der_lengths() {
            assert!(read(&[0x04, 0x80, 0x00, 0x00]).is_none()); // indefinite
            assert!(read(&[0x04, 0x81, 0x05, 1, 2, 3, 4, 5]).is_none()); // not minimal
            assert!(read(&[0x04, 0x82, 0x00, 0x90]).is_none()); // leading zero
            assert!(read(&[0x04, 0x05, 1, 2]).is_none()); // truncated
            assert!(read(&[0x1f, 0x01, 0x00]).is_none()); // high tag number
            assert!(read(&[]).is_none());
        }

        #[test]
        fn positive_integers() {
            assert_eq!(positive_integer_content(&[0x94, 0x17]), vec![0, 0x94, 0x17]);
            assert_eq!(
                positive_integer_content(&[0x00, 0x07, 0x99]),
                vec![0x07, 0x99]
            );
            assert_eq!(positive_integer_content(&[0x00, 0x80]), vec![0x00, 0x80]);
            assert_eq!(positive_integer_content(&[]), vec![0]);
        }
    }
}

/// The few certificate fields this module needs, as raw slices of the certificate.
pub(crate) mod cert_fields {
    use chrono::{DateTime, NaiveDate, Utc};

    use super::der_io::{self, Tlv};

    pub(crate) struct CertFields<'a> {
        pub subject: &'a [u8],
        pub spki: &'a [u8],
        pub not_after: DateTime<Utc>,
        /// (OID content bytes, critical, extnValue content bytes)
        pub extensions: Vec<(&'a [u8], bool, &'a [u8])>,
    }

    /// Walks Certificate -> TBSCertificate; `None` when the structure is not a certificate.
    pub(crate) fn parse(cert_der: &[u8]) -> Option<CertFields<'_>> {
        let cert = der_io::read_one_tagged(cert_der, der_io::SEQUENCE)?;
        let parts = der_io::read_all(cert.value)?;
        let [tbs, alg, sig] = parts.as_slice() else {
            return None;
        };
        if tbs.tag != der_io::SEQUENCE || alg.tag != der_io::SEQUENCE {
            return None;
        }
        if sig.tag != der_io::BIT_STRING {
            return None;
        }
        let fields = der_io::read_all(tbs.value)?;
        let mut it = fields.iter().peekable();
        // [0] EXPLICIT version, absent for v1.
        if it.peek().is_some_and(|t| t.tag == 0xa0) {
            it.next();
        }
        let serial = it.next()?;
        let signature = it.next()?;
        let issuer = it.next()?;
        let validity = it.next()?;
        let subject = it.next()?;
        let spki = it.next()?;
        let tags_ok = serial.tag == der_io::INTEGER
            && signature.tag == der_io::SEQUENCE
            && issuer.tag == der_io::SEQUENCE
            && validity.tag == der_io::SEQUENCE
            && subject.tag == der_io::SEQUENCE
            && spki.tag == der_io::SEQUENCE;
        if !tags_ok {
            return None;
        }
        let times = der_io::read_all(validity.value)?;
        let [_, not_after] = times.as_slice() else {
            return None;
        };
        let not_after = parse_time(not_after)?;
        let mut extensions = Vec::new();
        for field in it {
            if field.tag == 0xa3 {
                let list = der_io::read_one_tagged(field.value, der_io::SEQUENCE)?;
                for ext in der_io::read_all(list.value)? {
                    extensions.push(parse_extension(&ext)?);
                }
            }
        }
        Some(CertFields {
            subject: subject.raw,
            spki: spki.raw,
            not_after,
            extensions,
        })
    }

    fn parse_extension<'a>(ext: &Tlv<'a>) -> Option<(&'a [u8], bool, &'a [u8])> {
        if ext.tag != der_io::SEQUENCE {
            return None;
        }
        let parts = der_io::read_all(ext.value)?;
        let (oid, critical, value) = match parts.as_slice() {
            [oid, value] => (oid, false, value),
            [oid, crit, value] if crit.tag == der_io::BOOLEAN => {
                (oid, crit.value.first().is_some_and(|b| *b != 0), value)
            }
            _ => return None,
        };
        if oid.tag != der_io::OID || value.tag != der_io::OCTET_STRING {
            return None;
        }
        Some((oid.value, critical, value.value))
    }

    /// UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ), as RFC 5280 requires.
    pub(crate) fn parse_time(t: &Tlv<'_>) -> Option<DateTime<Utc>> {
        let text = std::str::from_utf8(t.value).ok()?;
        let digits = text.strip_suffix('Z')?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (year, rest) = match (t.tag, digits.len()) {
            (der_io::UTC_TIME, 12) => {
                let yy: i32 = digits.get(..2)?.parse().ok()?;
                (
                    if yy >= 50 { 1900 + yy } else { 2000 + yy },
                    digits.get(2..)?,
                )
            }
            (der_io::GENERALIZED_TIME, 14) => (digits.get(..4)?.parse().ok()?, digits.get(4..)?),
            _ => return None,
        };
        let num = |r: std::ops::Range<usize>| -> Option<u32> { rest.get(r)?.parse().ok() };
        let date = NaiveDate::from_ymd_opt(year, num(0..2)?, num(2..4)?)?;
        let time = date.and_hms_opt(num(4..6)?, num(6..8)?, num(8..10)?)?;
        Some(time.and_utc())
    }
}
