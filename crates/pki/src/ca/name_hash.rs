//! X.509 names: OpenSSL's subject hash (`openssl x509 -hash`, the `<hash>.0` file names of
//! c_rehash directories) and a readable one-line form for logs.
//!
//! The hash is SHA-1 over OpenSSL's *canonical* name encoding: every string-typed value is
//! turned into a UTF8String, ASCII-lower-cased, trimmed and with internal whitespace runs
//! collapsed; the RDN SETs are concatenated without the outer SEQUENCE. The first four digest
//! bytes read as a little-endian u32 give the hash.

use sha1::{Digest, Sha1};

use super::der_io::{self, Tlv};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("malformed distinguished name")]
    Malformed,
    #[error("distinguished name holds a string value that cannot be decoded")]
    BadString,
}

/// One attribute of a name: the OID content bytes and the value element as encoded.
pub(crate) struct Attribute<'a> {
    pub oid: &'a [u8],
    pub value: Tlv<'a>,
}

/// Splits a Name (the DER SEQUENCE) into its RDNs, each a list of attributes.
pub(crate) fn parse_name(name_der: &[u8]) -> Result<Vec<Vec<Attribute<'_>>>, NameError> {
    let name = der_io::read_one_tagged(name_der, der_io::SEQUENCE).ok_or(NameError::Malformed)?;
    let rdns = der_io::read_all(name.value).ok_or(NameError::Malformed)?;
    let mut out = Vec::with_capacity(rdns.len());
    for rdn in rdns {
        if rdn.tag != der_io::SET {
            return Err(NameError::Malformed);
        }
        let atvs = der_io::read_all(rdn.value).ok_or(NameError::Malformed)?;
        if atvs.is_empty() {
            return Err(NameError::Malformed);
        }
        let mut attrs = Vec::with_capacity(atvs.len());
        for atv in atvs {
            if atv.tag != der_io::SEQUENCE {
                return Err(NameError::Malformed);
            }
            let parts = der_io::read_all(atv.value).ok_or(NameError::Malformed)?;
            let [oid, value] = parts.as_slice() else {
                return Err(NameError::Malformed);
            };
            if oid.tag != der_io::OID {
                return Err(NameError::Malformed);
            }
            attrs.push(Attribute {
                oid: oid.value,
                value: *value,
            });
        }
        out.push(attrs);
    }
    Ok(out)
}

/// Decodes a string-typed value to text, the way OpenSSL's ASN1_STRING_to_UTF8 does:
/// single-byte string types are read as Latin-1. `None` for non-string types.
pub(crate) fn decode_string(value: &Tlv<'_>) -> Option<Result<String, NameError>> {
    let bytes = value.value;
    let text = match value.tag {
        der_io::UTF8_STRING => std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| NameError::BadString),
        der_io::PRINTABLE_STRING
        | der_io::TELETEX_STRING
        | der_io::IA5_STRING
        | der_io::VISIBLE_STRING => Ok(bytes.iter().map(|b| char::from(*b)).collect()),
        der_io::BMP_STRING => {
            if bytes.len() % 2 != 0 {
                return Some(Err(NameError::BadString));
            }
            let units = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .map_err(|_| NameError::BadString)
        }
        der_io::UNIVERSAL_STRING => {
            if bytes.len() % 4 != 0 {
                return Some(Err(NameError::BadString));
            }
            bytes
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect::<Option<String>>()
                .ok_or(NameError::BadString)
        }
        _ => return None,
    };
    Some(text)
}

/// OpenSSL's canonical text: trimmed, whitespace runs collapsed to one space, ASCII lower case.
fn canonical_text(text: &str) -> Vec<u8> {
    // OpenSSL's isspace: space, \t, \n, \v, \f, \r.
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let bytes = text.as_bytes();
    let start = bytes.iter().position(|b| !is_space(*b));
    let end = bytes.iter().rposition(|b| !is_space(*b));
    let trimmed = match (start, end) {
        (Some(s), Some(e)) => bytes.get(s..=e).unwrap_or(&[]),
        _ => &[],
    };
    let mut out = Vec::with_capacity(trimmed.len());
    let mut in_space = false;
    for &b in trimmed {
        if is_space(b) {
            if !in_space {
                out.push(b' ');
            }
            in_space = true;
        } else {
            out.push(b.to_ascii_lowercase());
            in_space = false;
        }
    }
    out
}

/// OpenSSL's canonical encoding of a name (input: the DER Name SEQUENCE).
pub(crate) fn canonical_encoding(name_der: &[u8]) -> Result<Vec<u8>, NameError> {
    let rdns = parse_name(name_der)?;
    let mut out = Vec::with_capacity(name_der.len());
    for rdn in rdns {
        let mut atvs: Vec<Vec<u8>> = Vec::with_capacity(rdn.len());
        for attr in rdn {
            let value = match decode_string(&attr.value) {
                Some(text) => der_io::tlv(der_io::UTF8_STRING, &canonical_text(&text?)),
                None => attr.value.raw.to_vec(),
            };
            let mut content = der_io::tlv(der_io::OID, attr.oid);
            content.extend_from_slice(&value);
            atvs.push(der_io::tlv(der_io::SEQUENCE, &content));
        }
        // A SET OF is DER-sorted by encoding; canonicalisation may change the order.
        atvs.sort();
        der_io::write(der_io::SET, &atvs.concat(), &mut out);
    }
    Ok(out)
}

/// OpenSSL's X509_NAME_hash of a DER Name.
pub fn name_hash(name_der: &[u8]) -> Result<u32, NameError> {
    let canon = canonical_encoding(name_der)?;
    let digest = Sha1::digest(&canon);
    Ok(u32::from_le_bytes([
        digest[0], digest[1], digest[2], digest[3],
    ]))
}

/// The hash as `openssl x509 -hash` prints it: 8 lower-case hex digits.
pub fn format_hash(hash: u32) -> String {
    format!("{hash:08x}")
}

fn short_name(oid: &[u8]) -> Option<&'static str> {
    // Content bytes of the OIDs we name: 2.5.4.x, emailAddress, DC, UID.
    Some(match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x05] => "serialNumber",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x09] => "street",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x55, 0x04, 0x0c] => "title",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID",
        _ => return None,
    })
}

/// Dotted form of OID content bytes; hex when they are not a valid encoding.
pub(crate) fn dotted_oid(oid: &[u8]) -> String {
    let mut arcs: Vec<u128> = Vec::new();
    let mut current: u128 = 0;
    let mut complete = true;
    for b in oid {
        // A leading 0x80 would be a non-minimal arc; arcs beyond u128 are not worth showing.
        if (complete && *b == 0x80) || current >> 121 != 0 {
            return hex::encode(oid);
        }
        current = (current << 7) | u128::from(b & 0x7f);
        complete = b & 0x80 == 0;
        if complete {
            if arcs.is_empty() {
                let (first, second) = match current {
                    0..=39 => (0, current),
                    40..=79 => (1, current - 40),
                    _ => (2, current - 80),
                };
                arcs.push(first);
                arcs.push(second);
            } else {
                arcs.push(current);
            }
            current = 0;
        }
    }
    if !complete || arcs.is_empty() {
        return hex::encode(oid);
    }
    arcs.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(".")
}

/// RFC 4514-style escaping of one value.
fn escape_value(text: &str, out: &mut String) {
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        let needs = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if c.is_control() {
            out.push_str(&format!("\\{:02x}", u32::from(c) & 0xff));
            continue;
        }
        if needs {
            out.push('\\');
        }
        out.push(c);
    }
}

/// A one-line form for logs and the admin API, in encoding order:
/// `CN=SEP001122334455, C=NZ, O=Example Voice Ltd`. Multi-valued RDNs are joined with `+`;
/// values that are not strings appear as `#` plus the hex of their encoding (RFC 4514).
pub(crate) fn name_to_string(name_der: &[u8]) -> Result<String, NameError> {
    let rdns = parse_name(name_der)?;
    let mut out = String::new();
    for (i, rdn) in rdns.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match short_name(attr.oid) {
                Some(name) => out.push_str(name),
                None => out.push_str(&dotted_oid(attr.oid)),
            }
            out.push('=');
            match decode_string(&attr.value) {
                Some(Ok(text)) => escape_value(&text, &mut out),
                _ => {
                    out.push('#');
                    out.push_str(&hex::encode(attr.value.raw));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atv(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        let mut c = der_io::tlv(der_io::OID, oid);
        c.extend(der_io::tlv(tag, value));
        der_io::tlv(der_io::SEQUENCE, &c)
    }

    fn name(rdns: &[Vec<Vec<u8>>]) -> Vec<u8> {
        let mut c = Vec::new();
        for rdn in rdns {
            c.extend(der_io::tlv(der_io::SET, &rdn.concat()));
        }
        der_io::tlv(der_io::SEQUENCE, &c)
    }

    #[test]
    fn canonical_text_rules() {
        assert_eq!(canonical_text("  Hello   World\t"), b"hello world");
        assert_eq!(canonical_text("A\n\r B"), b"a b");
        assert_eq!(canonical_text("   "), b"");
        assert_eq!(canonical_text("ÄBC"), "Äbc".as_bytes());
    }

    #[test]
    fn equivalent_names_hash_alike() {
        let cn = [0x55, 0x04, 0x03];
        let a = name(&[vec![atv(&cn, der_io::PRINTABLE_STRING, b"  Capf  Test ")]]);
        let b = name(&[vec![atv(&cn, der_io::UTF8_STRING, b"capf test")]]);
        let bmp: Vec<u8> = "CAPF TEST"
            .encode_utf16()
            .flat_map(|u| u.to_be_bytes())
            .collect();
        let c = name(&[vec![atv(&cn, der_io::BMP_STRING, &bmp)]]);
        let d = name(&[vec![atv(&cn, der_io::UTF8_STRING, b"capf-test")]]);
        assert_eq!(name_hash(&a).unwrap(), name_hash(&b).unwrap());
        assert_eq!(name_hash(&a).unwrap(), name_hash(&c).unwrap());
        assert_ne!(name_hash(&a).unwrap(), name_hash(&d).unwrap());
    }

    #[test]
    fn display_form() {
        let n = name(&[
            vec![atv(&[0x55, 4, 3], der_io::UTF8_STRING, b"SEP001122334455")],
            vec![atv(&[0x55, 4, 6], der_io::PRINTABLE_STRING, b"NZ")],
            vec![
                atv(&[0x55, 4, 10], der_io::UTF8_STRING, b"A, B"),
                atv(&[0x55, 4, 11], der_io::UTF8_STRING, b" x"),
            ],
            vec![atv(&[0x2a, 0x03], der_io::INTEGER, &[5])],
        ]);
        assert_eq!(
            name_to_string(&n).unwrap(),
            "CN=SEP001122334455, C=NZ, O=A\\, B+OU=\\ x, 1.2.3=#020105"
        );
    }

    #[test]
    fn oid_text() {
        assert_eq!(dotted_oid(&[0x55, 0x04, 0x03]), "2.5.4.3");
        assert_eq!(
            dotted_oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]),
            "1.2.840.113549.1.1.11"
        );
        assert_eq!(dotted_oid(&[0x2b, 0x81, 0x04, 0x00, 0x0a]), "1.3.132.0.10");
        assert_eq!(dotted_oid(&[0x88, 0x37, 0x03]), "2.999.3");
        assert_eq!(dotted_oid(&[0x2a, 0x86]), "2a86");
        assert_eq!(dotted_oid(&[]), "");
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(name_hash(&[]), Err(NameError::Malformed));
        assert_eq!(
            name_hash(&[0x30, 0x03, 0x31, 0x01]),
            Err(NameError::Malformed)
        );
        let bad_utf8 = name(&[vec![atv(&[0x55, 4, 3], der_io::UTF8_STRING, &[0xff])]]);
        assert_eq!(name_hash(&bad_utf8), Err(NameError::BadString));
        // The empty name is valid and hashes like OpenSSL's (SHA-1 of nothing).
        assert_eq!(format_hash(name_hash(&[0x30, 0x00]).unwrap()), "eea339da");
    }
}
