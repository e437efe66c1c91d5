//! Checks on the public key a phone returns in KEY_GENERATE_RESPONSE before it is certified:
//! the algorithm and size (or curve) the operation asked for, and a key that is actually usable.

use capf_model::keyspec::{Curve, KeySpec};

use super::der_io;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    #[error("public key is {actual}, expected {expected}")]
    WrongAlgorithm { expected: String, actual: String },
    #[error("RSA key has {actual} bits, expected {expected}")]
    WrongSize { expected: u16, actual: u32 },
    #[error("EC key is on {actual}, expected {expected}")]
    WrongCurve { expected: String, actual: String },
    #[error("EC key on an unsupported curve (OID {0})")]
    UnsupportedCurve(String),
    #[error("unusable public key: {0}")]
    BadKey(&'static str),
    #[error("malformed public key: {0}")]
    Malformed(&'static str),
}

// OID content bytes.
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];

/// Accepts the key only if it is exactly what the operation asked for.
pub fn check_public_key(spki_der: &[u8], expected: KeySpec) -> Result<(), PublicKeyError> {
    let actual = describe_public_key(spki_der)?;
    match (expected, actual) {
        (KeySpec::Rsa(want), KeySpec::Rsa(got)) if want == got => Ok(()),
        (KeySpec::Rsa(want), KeySpec::Rsa(got)) => Err(PublicKeyError::WrongSize {
            expected: want,
            actual: u32::from(got),
        }),
        (KeySpec::Ec(want), KeySpec::Ec(got)) if want == got => Ok(()),
        (KeySpec::Ec(want), KeySpec::Ec(got)) => Err(PublicKeyError::WrongCurve {
            expected: curve_name(want).into(),
            actual: curve_name(got).into(),
        }),
        (want, got) => Err(PublicKeyError::WrongAlgorithm {
            expected: algorithm_name(want).into(),
            actual: algorithm_name(got).into(),
        }),
    }
}

/// Parses and validates the key and says what it is.
pub fn describe_public_key(spki_der: &[u8]) -> Result<KeySpec, PublicKeyError> {
    let spki = der_io::read_one_tagged(spki_der, der_io::SEQUENCE)
        .ok_or(PublicKeyError::Malformed("not a DER SubjectPublicKeyInfo"))?;
    let parts =
        der_io::read_all(spki.value).ok_or(PublicKeyError::Malformed("bad SPKI contents"))?;
    let [alg, key] = parts.as_slice() else {
        return Err(PublicKeyError::Malformed(
            "SPKI must hold an algorithm and a key",
        ));
    };
    if alg.tag != der_io::SEQUENCE || key.tag != der_io::BIT_STRING {
        return Err(PublicKeyError::Malformed(
            "SPKI must hold an algorithm and a key",
        ));
    }
    let key_bytes = match key.value.split_first() {
        Some((0, rest)) => rest,
        _ => return Err(PublicKeyError::Malformed("key BIT STRING has unused bits")),
    };
    let alg_parts =
        der_io::read_all(alg.value).ok_or(PublicKeyError::Malformed("bad AlgorithmIdentifier"))?;
    let (oid, params) = match alg_parts.as_slice() {
        [oid] => (oid, None),
        [oid, params] => (oid, Some(params)),
        _ => return Err(PublicKeyError::Malformed("bad AlgorithmIdentifier")),
    };
    if oid.tag != der_io::OID {
        return Err(PublicKeyError::Malformed("bad AlgorithmIdentifier"));
    }
    match oid.value {
        RSA_ENCRYPTION => {
            if !params.is_some_and(|p| p.tag == der_io::NULL && p.value.is_empty()) {
                return Err(PublicKeyError::Malformed(
                    "rsaEncryption needs NULL parameters",
                ));
            }
            describe_rsa(key_bytes)
        }
        EC_PUBLIC_KEY => {
            let curve_oid = params
                .filter(|p| p.tag == der_io::OID)
                .ok_or(PublicKeyError::Malformed("EC key without a named curve"))?;
            let curve = match curve_oid.value {
                P256 => Curve::P256,
                P384 => Curve::P384,
                P521 => Curve::P521,
                other => return Err(PublicKeyError::UnsupportedCurve(oid_text(other))),
            };
            check_ec_point(curve, key_bytes)?;
            Ok(KeySpec::Ec(curve))
        }
        _ => Err(PublicKeyError::WrongAlgorithm {
            expected: "RSA or EC".into(),
            actual: oid_text(oid.value),
        }),
    }
}

/// RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
fn describe_rsa(key: &[u8]) -> Result<KeySpec, PublicKeyError> {
    let seq = der_io::read_one_tagged(key, der_io::SEQUENCE)
        .ok_or(PublicKeyError::Malformed("bad RSAPublicKey"))?;
    let ints = der_io::read_all(seq.value).ok_or(PublicKeyError::Malformed("bad RSAPublicKey"))?;
    let [n, e] = ints.as_slice() else {
        return Err(PublicKeyError::Malformed("bad RSAPublicKey"));
    };
    if n.tag != der_io::INTEGER || e.tag != der_io::INTEGER {
        return Err(PublicKeyError::Malformed("bad RSAPublicKey"));
    }
    let n = unsigned_magnitude(n.value)?;
    let e = unsigned_magnitude(e.value)?;
    let bits = bit_length(n);
    if n.last().is_none_or(|b| b & 1 == 0) {
        return Err(PublicKeyError::BadKey("RSA modulus is even"));
    }
    // Phones use 65537. Smaller exponents invite the attacks on low exponents (e = 3 above
    // all); 32 bits or more, or even, is not a sane key.
    if e.len() > 4 {
        return Err(PublicKeyError::BadKey("RSA exponent too large"));
    }
    let e = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    if e < 65537 || e % 2 == 0 || e >= 1 << 32 {
        return Err(PublicKeyError::BadKey(
            "RSA exponent must be odd and 65537 <= e < 2^32",
        ));
    }
    let bits = u16::try_from(bits).map_err(|_| PublicKeyError::BadKey("RSA modulus too large"))?;
    if bits < 512 {
        return Err(PublicKeyError::BadKey("RSA modulus too small"));
    }
    if small_factor(n).is_some() {
        // The product of two large primes has none: a broken key generator, or a forgery.
        return Err(PublicKeyError::BadKey(
            "RSA modulus has a small prime factor",
        ));
    }
    Ok(KeySpec::Rsa(bits))
}

/// Odd primes below 1,000 (2 is ruled out by the modulus being odd). Trial division by them
/// costs about 40,000 byte steps for a 2048-bit modulus, nothing beside a signature.
const SMALL_PRIMES: [u32; 167] = {
    let mut primes = [0u32; 167];
    let (mut n, mut count) = (3u32, 0usize);
    while count < primes.len() {
        let mut d = 3;
        let mut prime = true;
        while d * d <= n {
            if n % d == 0 {
                prime = false;
                break;
            }
            d += 2;
        }
        if prime {
            primes[count] = n;
            count += 1;
        }
        n += 2;
    }
    primes
};

/// A prime below 1,000 that divides the big-endian magnitude `n`, if any.
fn small_factor(n: &[u8]) -> Option<u32> {
    SMALL_PRIMES
        .iter()
        .copied()
        .find(|&p| n.iter().fold(0u32, |r, &b| ((r << 8) | u32::from(b)) % p) == 0)
}

/// The key itself (the subjectPublicKey BIT STRING's content) of a SubjectPublicKeyInfo:
/// the same for every encoding of the algorithm's parameters, so two SPKIs of one key
/// compare equal by it.
pub fn key_bits(spki_der: &[u8]) -> Option<&[u8]> {
    let spki = der_io::read_one_tagged(spki_der, der_io::SEQUENCE)?;
    match der_io::read_all(spki.value)?.as_slice() {
        [alg, key] if alg.tag == der_io::SEQUENCE && key.tag == der_io::BIT_STRING => {
            Some(key.value)
        }
        _ => None,
    }
}

/// Magnitude bytes of a DER INTEGER that must be positive and minimally encoded.
fn unsigned_magnitude(content: &[u8]) -> Result<&[u8], PublicKeyError> {
    match content {
        [] => Err(PublicKeyError::Malformed("empty INTEGER")),
        [first, ..] if first & 0x80 != 0 => Err(PublicKeyError::BadKey("negative RSA integer")),
        [0, second, ..] if second & 0x80 == 0 => {
            Err(PublicKeyError::Malformed("INTEGER not minimally encoded"))
        }
        [0, rest @ ..] => Ok(rest),
        all => Ok(all),
    }
}

fn bit_length(magnitude: &[u8]) -> u32 {
    match magnitude.first() {
        None | Some(0) => 0,
        Some(first) => {
            let rest = u32::try_from(magnitude.len() - 1)
                .unwrap_or(u32::MAX / 8)
                .saturating_mul(8);
            rest.saturating_add(8 - first.leading_zeros())
        }
    }
}

/// The point must be uncompressed (04 || X || Y) and on the curve (not the identity).
fn check_ec_point(curve: Curve, point: &[u8]) -> Result<(), PublicKeyError> {
    let field_len = match curve {
        Curve::P256 => 32,
        Curve::P384 => 48,
        Curve::P521 => 66,
    };
    if point.first() != Some(&0x04) || point.len() != 1 + 2 * field_len {
        return Err(PublicKeyError::BadKey(
            "EC point is not in uncompressed form",
        ));
    }
    let valid = match curve {
        Curve::P256 => p256::PublicKey::from_sec1_bytes(point).is_ok(),
        Curve::P384 => p384::PublicKey::from_sec1_bytes(point).is_ok(),
        Curve::P521 => p521::PublicKey::from_sec1_bytes(point).is_ok(),
    };
    if valid {
        Ok(())
    } else {
        Err(PublicKeyError::BadKey("EC point is not on the curve"))
    }
}

fn curve_name(curve: Curve) -> &'static str {
    match curve {
        Curve::P256 => "P-256",
        Curve::P384 => "P-384",
        Curve::P521 => "P-521",
    }
}

fn algorithm_name(spec: KeySpec) -> &'static str {
    if spec.is_rsa() {
        "RSA"
    } else {
        "EC"
    }
}

fn oid_text(oid: &[u8]) -> String {
    super::name_hash::dotted_oid(oid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::phone_key::PhoneKey;
    use proptest::prelude::*;

    fn vector_spki(file: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../tests/vectors/device/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        let cert = pem::parse_many(text)
            .unwrap()
            .into_iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .unwrap();
        crate::ca::cert_fields::parse(cert.contents())
            .unwrap()
            .spki
            .to_vec()
    }

    fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
        let mut ints = der_io::tlv(der_io::INTEGER, n);
        ints.extend(der_io::tlv(der_io::INTEGER, e));
        let key = der_io::tlv(der_io::SEQUENCE, &ints);
        let mut bits = vec![0u8];
        bits.extend(key);
        let mut alg = der_io::tlv(der_io::OID, RSA_ENCRYPTION);
        alg.extend(der_io::tlv(der_io::NULL, &[]));
        let mut spki = der_io::tlv(der_io::SEQUENCE, &alg);
        spki.extend(der_io::tlv(der_io::BIT_STRING, &bits));
        der_io::tlv(der_io::SEQUENCE, &spki)
    }

    #[test]
    fn vector_keys_are_described() {
        let cases = [
            ("01-SEP001122334455-rsa2048.pem", KeySpec::Rsa(2048)),
            ("02-SEP00112233AABB-p256.pem", KeySpec::Ec(Curve::P256)),
            ("04-SEP001122334455-rsa3072.pem", KeySpec::Rsa(3072)),
            ("05-SEP00112233AABB-p384.pem", KeySpec::Ec(Curve::P384)),
        ];
        for (file, spec) in cases {
            let spki = vector_spki(file);
            assert_eq!(describe_public_key(&spki), Ok(spec), "{file}");
            assert_eq!(check_public_key(&spki, spec), Ok(()));
        }
    }

    #[test]
    fn mismatches_are_typed() {
        let rsa = vector_spki("01-SEP001122334455-rsa2048.pem");
        let ec = vector_spki("02-SEP00112233AABB-p256.pem");
        assert_eq!(
            check_public_key(&rsa, KeySpec::Rsa(3072)),
            Err(PublicKeyError::WrongSize {
                expected: 3072,
                actual: 2048
            })
        );
        assert!(matches!(
            check_public_key(&rsa, KeySpec::Ec(Curve::P256)),
            Err(PublicKeyError::WrongAlgorithm { .. })
        ));
        assert!(matches!(
            check_public_key(&ec, KeySpec::Rsa(2048)),
            Err(PublicKeyError::WrongAlgorithm { .. })
        ));
        assert_eq!(
            check_public_key(&ec, KeySpec::Ec(Curve::P384)),
            Err(PublicKeyError::WrongCurve {
                expected: "P-384".into(),
                actual: "P-256".into()
            })
        );
    }

    #[test]
    fn p521_and_generated_keys() {
        for spec in [KeySpec::Ec(Curve::P521), KeySpec::Rsa(2048)] {
            let key = PhoneKey::generate(spec).unwrap();
            assert_eq!(check_public_key(&key.spki_der(), spec), Ok(()));
        }
    }

    /// The modulus of the RSA-2048 vector key, as INTEGER content (leading 00 included).
    fn vector_modulus() -> Vec<u8> {
        let spki = vector_spki("01-SEP001122334455-rsa2048.pem");
        let bits = key_bits(&spki).unwrap();
        let seq = der_io::read_one_tagged(&bits[1..], der_io::SEQUENCE).unwrap();
        der_io::read_all(seq.value).unwrap()[0].value.to_vec()
    }

    #[test]
    fn rsa_exponent_and_modulus_rules() {
        let n = vector_modulus();
        assert_eq!(
            describe_public_key(&rsa_spki(&n, &[0x01, 0x00, 0x01])),
            Ok(KeySpec::Rsa(2048))
        );
        // Finding 13 of the hardening: e = 3 and any exponent below 65537 are refused.
        for bad_e in [
            &[0x03][..],
            &[0x01],
            &[0x02],
            &[0x00, 0xff, 0xff],
            &[0x01, 0x00, 0x00],
            &[0x01, 0x00, 0x00, 0x00, 0x01],
        ] {
            assert!(
                matches!(
                    describe_public_key(&rsa_spki(&n, bad_e)),
                    Err(PublicKeyError::BadKey(_))
                ),
                "{bad_e:?}"
            );
        }
        // An odd 2048-bit modulus divisible by 3 (c0 11 11 ... 11: digit sum 4527).
        let mut by_three = vec![0x00, 0xc0];
        by_three.extend(vec![0x11u8; 255]);
        assert_eq!(small_factor(&by_three[1..]), Some(3));
        assert_eq!(
            describe_public_key(&rsa_spki(&by_three, &[0x01, 0x00, 0x01])),
            Err(PublicKeyError::BadKey(
                "RSA modulus has a small prime factor"
            ))
        );
        assert_eq!(small_factor(&n[1..]), None);
        assert_eq!(SMALL_PRIMES[..5], [3, 5, 7, 11, 13]);
        assert_eq!(SMALL_PRIMES[SMALL_PRIMES.len() - 1], 997);
        let mut even = n.clone();
        *even.last_mut().unwrap() &= 0xfe;
        assert!(matches!(
            describe_public_key(&rsa_spki(&even, &[0x01, 0x00, 0x01])),
            Err(PublicKeyError::BadKey(_))
        ));
        // Negative modulus (no leading 00 before a high bit).
        assert!(describe_public_key(&rsa_spki(&n[1..], &[0x01, 0x00, 0x01])).is_err());
    }

    #[test]
    fn ec_point_rules() {
        let spki = vector_spki("02-SEP00112233AABB-p256.pem");
        // The point is the last 65 bytes. Off-curve: flip a bit of Y.
        let mut off = spki.clone();
        let last = off.len() - 1;
        off[last] ^= 1;
        assert_eq!(
            describe_public_key(&off),
            Err(PublicKeyError::BadKey("EC point is not on the curve"))
        );
        // Compressed form (02/03 prefix) is refused.
        let mut compressed = spki.clone();
        compressed[spki.len() - 65] = 0x02;
        assert!(matches!(
            describe_public_key(&compressed),
            Err(PublicKeyError::BadKey(_))
        ));
        // Unknown curve (secp256k1 1.3.132.0.10).
        let mut k1 = spki.clone();
        let pos = k1.windows(P256.len()).position(|w| w == P256).unwrap();
        let mut swapped = k1[..pos - 2].to_vec();
        swapped.extend(der_io::tlv(der_io::OID, &[0x2b, 0x81, 0x04, 0x00, 0x0a]));
        swapped.extend_from_slice(&k1[pos + P256.len()..]);
        // Fix up the two enclosing lengths (3 bytes shorter).
        swapped[1] -= 3;
        swapped[3] -= 3;
        k1 = swapped;
        assert_eq!(
            describe_public_key(&k1),
            Err(PublicKeyError::UnsupportedCurve("1.3.132.0.10".into()))
        );
    }

    #[test]
    fn garbage_never_panics_and_is_refused() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x00],
            &[0x30, 0x02, 0x30, 0x00],
            &[0xff; 40],
        ] {
            assert!(describe_public_key(input).is_err());
        }
        // Every truncation and every single-byte change of real keys.
        for file in [
            "01-SEP001122334455-rsa2048.pem",
            "05-SEP00112233AABB-p384.pem",
        ] {
            let spki = vector_spki(file);
            for len in 0..spki.len() {
                assert!(describe_public_key(&spki[..len]).is_err());
            }
            for i in 0..spki.len() {
                for x in [0x01u8, 0x80, 0xff] {
                    let mut m = spki.clone();
                    m[i] ^= x;
                    let _ = describe_public_key(&m);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = describe_public_key(&bytes);
            let _ = check_public_key(&bytes, KeySpec::Rsa(2048));
        }

        #[test]
        fn mutated_keys_never_panic(
            pos in 0usize..600,
            val in any::<u8>(),
            rsa in any::<bool>(),
        ) {
            let file = if rsa { "01-SEP001122334455-rsa2048.pem" } else { "02-SEP00112233AABB-p256.pem" };
            let mut spki = vector_spki(file);
            let i = pos % spki.len();
            spki[i] = val;
            let _ = describe_public_key(&spki);
        }
    }
}
