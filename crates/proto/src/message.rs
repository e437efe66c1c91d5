//! Message layer: one typed view per command the server deals with (spec 2, 3).
//!
//! A typed view checks only the elements it interprets. Everything else (unknown tags, known
//! tags that mean nothing for that command) and the original element order live in [`Extra`],
//! so that `Message::from_frame(&f)?.to_frame(f.session_id) == f` for every well-formed frame.
//! Across all known tags (those spec 3.1 names), a repeated tag is rejected: no legitimate
//! sender repeats one, and two DEVICE_NAMEs or PASSWORDs would be ambiguous. Repeated unknown
//! tags are kept.

use std::fmt;

use capf_model::keyspec::{Curve, KeySpec};

use super::error::{DecodeError, EncodeError};
use super::frame::{Element, Frame};
use super::{command, key_type, tag};

// Receiver sanity limits per element value (spec 1.5).
const MAX_DEVICE_NAME: usize = 16;
const MAX_PASSWORD: usize = 17;
const MAX_CERTIFICATE: usize = 8 * 1024;
const MAX_SIGNED_DATA: usize = 1024;
const MAX_SHA2_SIGNED_DATA: usize = 1024 + 3;
const MAX_PUBLIC_KEY: usize = 2 * 1024;
const MAX_SUDI_DATA: usize = 12 * 1024;

/// What a typed view does not interpret: the other elements, in wire order, and the wire
/// order of all elements when it was not ascending. `Extra::default()` means "nothing extra,
/// ascending tag order", which is how the server should send (spec 1.7).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extra {
    elements: Vec<Element>,
    /// Tags of every element in wire order; `None` when that order was ascending, so that a
    /// freshly built message and the same message decoded from its encoding compare equal.
    order: Option<Vec<u8>>,
}

impl Extra {
    /// The elements the typed view did not interpret, in wire order.
    pub fn elements(&self) -> &[Element] {
        &self.elements
    }

    /// Tags that spec 3.1 does not define, in wire order (repeats included), so the session
    /// can log them.
    pub fn unknown_tags(&self) -> impl Iterator<Item = u8> + '_ {
        self.elements
            .iter()
            .map(|element| element.tag)
            .filter(|&t| !tag::is_known(t))
    }

    /// Nothing extra and ascending order.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty() && self.order.is_none()
    }
}

/// Typed messages. Commands known only by number (5-8, 16, 18-23) and undefined ones (0,
/// above 23) stay raw in `Other`; the session treats them as unexpected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    AuthRequest(AuthRequest),
    AuthResponse(AuthResponse),
    KeyGenerateRequest(KeyGenerateRequest),
    KeyGenerateResponse(KeyGenerateResponse),
    StoreCertificateRequest(StoreCertificateRequest),
    StoreCertificateResponse(ReasonOnly),
    FetchCertificateRequest(Empty),
    FetchCertificateResponse(FetchCertificateResponse),
    DeleteCertificateRequest(Empty),
    DeleteCertificateResponse(ReasonOnly),
    EndSession(ReasonOnly),
    RequestInProgress(Empty),
    Other(Frame),
}

impl Message {
    pub fn from_frame(frame: &Frame) -> Result<Message, DecodeError> {
        let elements = frame.elements.as_slice();
        Ok(match frame.command {
            command::AUTH_REQUEST => Message::AuthRequest(read(elements)?),
            command::AUTH_RESPONSE => Message::AuthResponse(read(elements)?),
            command::KEY_GENERATE_REQUEST => Message::KeyGenerateRequest(read(elements)?),
            command::KEY_GENERATE_RESPONSE => Message::KeyGenerateResponse(read(elements)?),
            command::STORE_CERTIFICATE_REQUEST => Message::StoreCertificateRequest(read(elements)?),
            command::STORE_CERTIFICATE_RESPONSE => {
                Message::StoreCertificateResponse(read(elements)?)
            }
            command::FETCH_CERTIFICATE_REQUEST => Message::FetchCertificateRequest(read(elements)?),
            command::FETCH_CERTIFICATE_RESPONSE => {
                Message::FetchCertificateResponse(read(elements)?)
            }
            command::DELETE_CERTIFICATE_REQUEST => {
                Message::DeleteCertificateRequest(read(elements)?)
            }
            command::DELETE_CERTIFICATE_RESPONSE => {
                Message::DeleteCertificateResponse(read(elements)?)
            }
            command::END_SESSION => Message::EndSession(read(elements)?),
            command::REQUEST_IN_PROGRESS => Message::RequestInProgress(read(elements)?),
            _ => Message::Other(frame.clone()),
        })
    }

    /// The frame to send. Lengths are not checked here (values are plain vectors); `encode`
    /// or `Frame::encode` reports an element or body that does not fit.
    pub fn to_frame(&self, session_id: u32) -> Frame {
        let elements = match self {
            Message::AuthRequest(m) => write(m),
            Message::AuthResponse(m) => write(m),
            Message::KeyGenerateRequest(m) => write(m),
            Message::KeyGenerateResponse(m) => write(m),
            Message::StoreCertificateRequest(m) => write(m),
            Message::StoreCertificateResponse(m) => write(m),
            Message::FetchCertificateRequest(m) => write(m),
            Message::FetchCertificateResponse(m) => write(m),
            Message::DeleteCertificateRequest(m) => write(m),
            Message::DeleteCertificateResponse(m) => write(m),
            Message::EndSession(m) => write(m),
            Message::RequestInProgress(m) => write(m),
            Message::Other(frame) => frame.elements.clone(),
        };
        Frame {
            command: self.command(),
            session_id,
            elements,
        }
    }

    pub fn command(&self) -> u8 {
        match self {
            Message::AuthRequest(_) => command::AUTH_REQUEST,
            Message::AuthResponse(_) => command::AUTH_RESPONSE,
            Message::KeyGenerateRequest(_) => command::KEY_GENERATE_REQUEST,
            Message::KeyGenerateResponse(_) => command::KEY_GENERATE_RESPONSE,
            Message::StoreCertificateRequest(_) => command::STORE_CERTIFICATE_REQUEST,
            Message::StoreCertificateResponse(_) => command::STORE_CERTIFICATE_RESPONSE,
            Message::FetchCertificateRequest(_) => command::FETCH_CERTIFICATE_REQUEST,
            Message::FetchCertificateResponse(_) => command::FETCH_CERTIFICATE_RESPONSE,
            Message::DeleteCertificateRequest(_) => command::DELETE_CERTIFICATE_REQUEST,
            Message::DeleteCertificateResponse(_) => command::DELETE_CERTIFICATE_RESPONSE,
            Message::EndSession(_) => command::END_SESSION,
            Message::RequestInProgress(_) => command::REQUEST_IN_PROGRESS,
            Message::Other(frame) => frame.command,
        }
    }

    pub fn name(&self) -> &'static str {
        command::name(self.command())
    }

    /// Decodes one whole frame and types it; returns the session id of its header too.
    pub fn decode(bytes: &[u8]) -> Result<(u32, Message), DecodeError> {
        let frame = Frame::decode(bytes)?;
        let message = Message::from_frame(&frame)?;
        Ok((frame.session_id, message))
    }

    /// Header + body in one buffer, ready for a single write.
    pub fn encode(&self, session_id: u32) -> Result<Vec<u8>, EncodeError> {
        self.to_frame(session_id).encode()
    }
}

/// AUTH_REQUEST (1), server to phone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthRequest {
    pub version: Option<u8>,
    pub auth_type: Option<u8>,
    pub extra: Extra,
}

impl AuthRequest {
    pub fn new(version: u8, auth_type: u8) -> AuthRequest {
        AuthRequest {
            version: Some(version),
            auth_type: Some(auth_type),
            extra: Extra::default(),
        }
    }
}

/// AUTH_RESPONSE (2), phone to server.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthResponse {
    pub reason: Option<u8>,
    pub version: Option<u8>,
    /// Without the NUL. On the wire: exactly one trailing NUL, none inside, printable ASCII.
    pub device_name: Option<String>,
    /// Without the NUL; "" for the single-NUL empty password.
    pub password: Option<String>,
    pub certificate: Option<CertificateElement>,
    pub signed_data: Option<Vec<u8>>,
    pub sha2_signed_data: Option<Sha2SignedData>,
    pub sudi: Option<SudiData>,
    pub extra: Extra,
}

// Manual so that the password never reaches a log.
impl fmt::Debug for AuthResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthResponse")
            .field("reason", &self.reason)
            .field("version", &self.version)
            .field("device_name", &self.device_name)
            .field(
                "password",
                &self.password.as_ref().map(|_| format_args!("<redacted>")),
            )
            .field("certificate", &self.certificate)
            .field("signed_data", &self.signed_data)
            .field("sha2_signed_data", &self.sha2_signed_data)
            .field("sudi", &self.sudi)
            .field("extra", &self.extra)
            .finish()
    }
}

/// KEY_GENERATE_REQUEST (3), server to phone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyGenerateRequest {
    pub key_size: Option<u16>,
    pub key_type: Option<u8>,
    pub curve: Option<u8>,
    pub extra: Extra,
}

impl KeyGenerateRequest {
    /// The request the reference server sends: KEY_SIZE + KEY_TYPE=0 for RSA, KEY_TYPE=1 +
    /// CURVE for EC.
    pub fn for_key(spec: KeySpec) -> KeyGenerateRequest {
        match spec {
            KeySpec::Rsa(bits) => KeyGenerateRequest {
                key_size: Some(bits),
                key_type: Some(key_type::RSA),
                curve: None,
                extra: Extra::default(),
            },
            KeySpec::Ec(curve) => KeyGenerateRequest {
                key_size: None,
                key_type: Some(key_type::EC),
                curve: Some(curve.wire_value()),
                extra: Extra::default(),
            },
        }
    }

    /// The key asked for, if the elements name one unambiguously. A missing KEY_TYPE with a
    /// KEY_SIZE counts as RSA, as older servers did not send KEY_TYPE.
    pub fn key_spec(&self) -> Option<KeySpec> {
        match (self.key_type, self.key_size, self.curve) {
            (Some(key_type::EC), None, Some(curve)) => Curve::from_wire(curve).map(KeySpec::Ec),
            (None | Some(key_type::RSA), Some(bits), None) => Some(KeySpec::Rsa(bits)),
            _ => None,
        }
    }
}

/// KEY_GENERATE_RESPONSE (4), phone to server: PUBLIC_KEY on success, REASON on failure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyGenerateResponse {
    /// DER SubjectPublicKeyInfo, unparsed.
    pub public_key: Option<Vec<u8>>,
    pub reason: Option<u8>,
    pub extra: Extra,
}

/// STORE_CERTIFICATE_REQUEST (9), server to phone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreCertificateRequest {
    pub certificate_type: Option<u8>,
    pub certificate: Option<CertificateElement>,
    pub extra: Extra,
}

impl StoreCertificateRequest {
    /// CERTIFICATE_TYPE and a single certificate entry, both carrying `cert_type`.
    pub fn new(cert_type: u8, der: Vec<u8>) -> StoreCertificateRequest {
        StoreCertificateRequest {
            certificate_type: Some(cert_type),
            certificate: Some(CertificateElement::single(cert_type, der)),
            extra: Extra::default(),
        }
    }
}

/// FETCH_CERTIFICATE_RESPONSE (12), phone to server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchCertificateResponse {
    pub reason: Option<u8>,
    pub certificate: Option<CertificateElement>,
    pub extra: Extra,
}

/// STORE_CERTIFICATE_RESPONSE (10), DELETE_CERTIFICATE_RESPONSE (14), END_SESSION (15).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReasonOnly {
    pub reason: Option<u8>,
    pub extra: Extra,
}

impl ReasonOnly {
    pub fn new(reason: u8) -> ReasonOnly {
        ReasonOnly {
            reason: Some(reason),
            extra: Extra::default(),
        }
    }
}

/// FETCH_CERTIFICATE_REQUEST (11), DELETE_CERTIFICATE_REQUEST (13), REQUEST_IN_PROGRESS (17).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Empty {
    pub extra: Extra,
}

/// CERTIFICATE element (tag 4, spec 3.5): one or more entries
/// `marker(1) len16 reserved(1) type(1) DER`. Every byte is kept so it re-encodes exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateElement {
    /// Never empty when decoded; the first entry is the one that counts.
    pub entries: Vec<CertificateEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateEntry {
    /// 0x01 in every observed entry (perhaps an index).
    pub marker: u8,
    /// 0x00 in every observed entry.
    pub reserved: u8,
    /// 1 = LSC, 2 = MIC; not trustworthy from clients (spec 3.5).
    pub cert_type: u8,
    pub der: Vec<u8>,
}

/// What `CertificateElement::first` returns for a hand-built element without entries, so that
/// the accessor stays total.
static NO_ENTRY: CertificateEntry = CertificateEntry {
    marker: 0,
    reserved: 0,
    cert_type: 0,
    der: Vec::new(),
};

impl CertificateElement {
    /// The layout every known sender uses: marker 1, reserved 0, one entry.
    pub fn single(cert_type: u8, der: Vec<u8>) -> Self {
        CertificateElement {
            entries: vec![CertificateEntry {
                marker: 1,
                reserved: 0,
                cert_type,
                der,
            }],
        }
    }

    /// The first entry. A decoded element always has one; for a hand-built element without
    /// entries this is an entry with an empty DER.
    pub fn first(&self) -> &CertificateEntry {
        self.entries.first().unwrap_or(&NO_ENTRY)
    }

    fn decode(value: &[u8]) -> Result<Self, DecodeError> {
        check_len(tag::CERTIFICATE, value, MAX_CERTIFICATE)?;
        let bad = |detail| DecodeError::BadCertificateEntry { detail };
        let mut entries = Vec::new();
        let mut rest = value;
        while !rest.is_empty() {
            let (marker, entry, after) = split_block(rest)
                .ok_or(bad("entry header or body runs past the end of the element"))?;
            let Some((&[reserved, cert_type], der)) = entry.split_first_chunk::<2>() else {
                return Err(bad("entry too short for its reserved and type bytes"));
            };
            if der.is_empty() {
                return Err(bad("entry holds no certificate"));
            }
            entries.push(CertificateEntry {
                marker,
                reserved,
                cert_type,
                der: der.to_vec(),
            });
            rest = after;
        }
        Ok(CertificateElement { entries })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in &self.entries {
            out.push(entry.marker);
            out.extend_from_slice(&len16(entry.der.len().saturating_add(2)));
            out.push(entry.reserved);
            out.push(entry.cert_type);
            out.extend_from_slice(&entry.der);
        }
        out
    }
}

/// SHA2_SIGNED_DATA element (tag 20, spec 3.6): hash id (2 or 3), u16 length, signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sha2SignedData {
    pub hash_id: u8,
    pub signature: Vec<u8>,
}

impl Sha2SignedData {
    fn decode(value: &[u8]) -> Result<Self, DecodeError> {
        check_len(tag::SHA2_SIGNED_DATA, value, MAX_SHA2_SIGNED_DATA)?;
        let bad = |detail| DecodeError::BadSha2SignedData { detail };
        let Some((&[hash_id, l0, l1], signature)) = value.split_first_chunk::<3>() else {
            return Err(bad("shorter than its 3-byte header"));
        };
        if !is_sha2_id(hash_id) {
            return Err(bad("hash id is neither 2 (SHA-256) nor 3 (SHA-512)"));
        }
        if usize::from(u16::from_be_bytes([l0, l1])) != signature.len() {
            return Err(bad("signature length does not match the element length"));
        }
        if signature.is_empty() {
            return Err(bad("empty signature"));
        }
        Ok(Sha2SignedData {
            hash_id,
            signature: signature.to_vec(),
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.signature.len());
        out.push(self.hash_id);
        out.extend_from_slice(&len16(self.signature.len()));
        out.extend_from_slice(&self.signature);
        out
    }
}

/// SUDI_DATA element (tag 16, spec 3.7): exactly three blocks `id len16 bytes` with ids 0
/// (certificate), 1 (SHA-1 signature) and 3 or 2 (SHA-2 signature), nothing after them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SudiData {
    pub certificate: Vec<u8>,
    pub sha1_signature: Vec<u8>,
    pub sha2_hash_id: u8,
    pub sha2_signature: Vec<u8>,
}

const SUDI_CERTIFICATE_ID: u8 = 0;

impl SudiData {
    fn decode(value: &[u8]) -> Result<Self, DecodeError> {
        check_len(tag::SUDI_DATA, value, MAX_SUDI_DATA)?;
        let bad = |detail| DecodeError::BadSudiData { detail };
        let mut blocks = [(0u8, &[][..]); 3];
        let mut rest = value;
        for block in &mut blocks {
            if rest.is_empty() {
                return Err(bad("fewer than three blocks"));
            }
            let (id, bytes, after) =
                split_block(rest).ok_or(bad("block header or body runs past the element"))?;
            if bytes.is_empty() {
                return Err(bad("empty block"));
            }
            *block = (id, bytes);
            rest = after;
        }
        if !rest.is_empty() {
            return Err(bad("bytes after the third block"));
        }
        let [(cert_id, certificate), (sha1_id, sha1_signature), (sha2_hash_id, sha2_signature)] =
            blocks;
        if cert_id != SUDI_CERTIFICATE_ID {
            return Err(bad("first block id is not 0 (certificate)"));
        }
        if sha1_id != super::hash_id::SHA1 {
            return Err(bad("second block id is not 1 (SHA-1)"));
        }
        if !is_sha2_id(sha2_hash_id) {
            return Err(bad("third block id is neither 2 (SHA-256) nor 3 (SHA-512)"));
        }
        Ok(SudiData {
            certificate: certificate.to_vec(),
            sha1_signature: sha1_signature.to_vec(),
            sha2_hash_id,
            sha2_signature: sha2_signature.to_vec(),
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (id, bytes) in [
            (SUDI_CERTIFICATE_ID, &self.certificate),
            (super::hash_id::SHA1, &self.sha1_signature),
            (self.sha2_hash_id, &self.sha2_signature),
        ] {
            out.push(id);
            out.extend_from_slice(&len16(bytes.len()));
            out.extend_from_slice(bytes);
        }
        out
    }
}

fn is_sha2_id(id: u8) -> bool {
    id == super::hash_id::SHA256 || id == super::hash_id::SHA512
}

/// Splits `id len16 bytes` off the front; `None` if the header or the bytes run past the end.
fn split_block(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&[id, l0, l1], rest) = bytes.split_first_chunk::<3>()?;
    let (block, after) = rest.split_at_checked(usize::from(u16::from_be_bytes([l0, l1])))?;
    Some((id, block, after))
}

/// A length for a u16 field. An oversized value saturates here; the enclosing element is then
/// at least as long and `Frame::encode` rejects it, so the wrong length never goes out.
fn len16(len: usize) -> [u8; 2] {
    u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes()
}

/// Size limit first, then non-empty; for variable-length binary elements.
fn check_len(tag: u8, value: &[u8], max: usize) -> Result<(), DecodeError> {
    if value.len() > max {
        return Err(DecodeError::ElementTooLong {
            tag,
            len: value.len(),
            max,
        });
    }
    if value.is_empty() {
        return Err(DecodeError::EmptyElement { tag });
    }
    Ok(())
}

/// A NUL-terminated printable ASCII string (DEVICE_NAME, PASSWORD), returned without the NUL.
fn decode_string(tag: u8, value: &[u8], max: usize) -> Result<String, DecodeError> {
    // The string rules are checked before the size limit so that a malformed string is
    // reported as such whatever its length.
    let Some((&last, text)) = value.split_last() else {
        return Err(DecodeError::EmptyElement { tag });
    };
    if last != 0 {
        return Err(DecodeError::StringNotTerminated { tag });
    }
    if text.contains(&0) {
        return Err(DecodeError::StringEmbeddedNul { tag });
    }
    if !text.iter().all(|&b| (0x20..=0x7e).contains(&b)) {
        return Err(DecodeError::StringNotPrintable { tag });
    }
    if value.len() > max {
        return Err(DecodeError::ElementTooLong {
            tag,
            len: value.len(),
            max,
        });
    }
    // Printable ASCII is valid UTF-8, so this conversion cannot fail.
    Ok(text.iter().map(|&b| char::from(b)).collect())
}

fn encode_string(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 1);
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    out
}

fn decode_u8(tag: u8, value: &[u8]) -> Result<u8, DecodeError> {
    match value {
        [byte] => Ok(*byte),
        _ => Err(DecodeError::BadFixedLength {
            tag,
            len: value.len(),
            expected: 1,
        }),
    }
}

fn decode_u16(tag: u8, value: &[u8]) -> Result<u16, DecodeError> {
    match value {
        [hi, lo] => Ok(u16::from_be_bytes([*hi, *lo])),
        _ => Err(DecodeError::BadFixedLength {
            tag,
            len: value.len(),
            expected: 2,
        }),
    }
}

fn decode_bytes(tag: u8, value: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    check_len(tag, value, max)?;
    Ok(value.to_vec())
}

/// The elements of one frame, split into those a typed view interprets and the rest.
struct Fields<'a> {
    used: Vec<(u8, &'a [u8])>,
    extra: Extra,
}

impl<'a> Fields<'a> {
    fn split(elements: &'a [Element], interpreted: &[u8]) -> Result<Self, DecodeError> {
        let mut seen = [false; 256];
        let mut used = Vec::new();
        let mut extra = Vec::new();
        let mut previous_tag = 0u8;
        let mut ascending = true;
        for element in elements {
            if tag::is_known(element.tag) {
                let seen = &mut seen[usize::from(element.tag)];
                if *seen {
                    return Err(DecodeError::DuplicateElement { tag: element.tag });
                }
                *seen = true;
            }
            if interpreted.contains(&element.tag) {
                used.push((element.tag, element.value.as_slice()));
            } else {
                extra.push(element.clone());
            }
            ascending &= element.tag >= previous_tag;
            previous_tag = element.tag;
        }
        // Ascending order is what `assemble` reproduces without help (unknown repeats keep
        // their relative order), so the order only needs recording when it differs.
        let order = (!ascending).then(|| elements.iter().map(|e| e.tag).collect());
        Ok(Fields {
            used,
            extra: Extra {
                elements: extra,
                order,
            },
        })
    }

    fn get<T>(
        &self,
        tag: u8,
        decode: impl FnOnce(&'a [u8]) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        self.used
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, value)| decode(value))
            .transpose()
    }

    fn u8(&self, tag: u8) -> Result<Option<u8>, DecodeError> {
        self.get(tag, |v| decode_u8(tag, v))
    }
}

/// Known elements of a typed view, in ascending tag order as written.
#[derive(Default)]
struct Writer(Vec<Element>);

impl Writer {
    fn put(&mut self, tag: u8, value: Option<Vec<u8>>) {
        if let Some(value) = value {
            self.0.push(Element::new(tag, value));
        }
    }
}

/// Puts the known elements and the extra ones back together: in the recorded wire order if
/// there is one, ascending by tag otherwise. Elements the order does not account for (fields
/// set after decoding) follow in ascending order; nothing is dropped.
fn assemble(known: Vec<Element>, extra: &Extra) -> Vec<Element> {
    let mut pool: Vec<Option<Element>> = known
        .into_iter()
        .chain(extra.elements.iter().cloned())
        .map(Some)
        .collect();
    let mut out = Vec::with_capacity(pool.len());
    if let Some(order) = &extra.order {
        for &wanted in order {
            // First unused element with that tag: known tags are unique, and repeated unknown
            // tags sit in `extra` in wire order.
            let slot = pool
                .iter_mut()
                .find(|slot| slot.as_ref().is_some_and(|e| e.tag == wanted));
            if let Some(element) = slot.and_then(Option::take) {
                out.push(element);
            }
        }
    }
    let mut rest: Vec<Element> = pool.into_iter().flatten().collect();
    rest.sort_by_key(|e| e.tag);
    out.extend(rest);
    out
}

/// A typed view of the elements of one command.
trait Typed: Sized {
    /// Tags this view interprets (and validates).
    const TAGS: &'static [u8];
    fn read(fields: Fields<'_>) -> Result<Self, DecodeError>;
    fn write(&self, out: &mut Writer);
    fn extra(&self) -> &Extra;
}

fn read<T: Typed>(elements: &[Element]) -> Result<T, DecodeError> {
    T::read(Fields::split(elements, T::TAGS)?)
}

fn write<T: Typed>(message: &T) -> Vec<Element> {
    let mut writer = Writer::default();
    message.write(&mut writer);
    assemble(writer.0, message.extra())
}

impl Typed for AuthRequest {
    const TAGS: &'static [u8] = &[tag::VERSION, tag::AUTH_TYPE];

    fn read(fields: Fields<'_>) -> Result<Self, DecodeError> {
        Ok(AuthRequest {
            version: fields.u8(tag::VERSION)?,
            auth_type: fields.u8(tag::AUTH_TYPE)?,
            extra: fields.extra,
        })
    }

    fn write(&self, out: &mut Writer) {
        out.put(tag::VERSION, self.version.map(|v| vec![v]));
        out.put(tag::AUTH_TYPE, self.auth_type.map(|v| vec![v]));
    }

    fn extra(&self) -> &Extra {
        &self.extra
    }
}

impl Typed for AuthResponse {
    const TAGS: &'static [u8] = &[
        tag::REASON,
        tag::CERTIFICATE,
        tag::SIGNED_DATA,
        tag::VERSION,
        tag::PASSWORD,
        tag::DEVICE_NAME,
        tag::SUDI_DATA,
        tag::SHA2_SIGNED_DATA,
    ];

    fn read(fields: Fields<'_>) -> Result<Self, DecodeError> {
        Ok(AuthResponse {
            reason: fields.u8(tag::REASON)?,
            version: fields.u8(tag::VERSION)?,
            device_name: fields.get(tag::DEVICE_NAME, |v| {
                decode_string(tag::DEVICE_NAME, v, MAX_DEVICE_NAME)
            })?,
            password: fields.get(tag::PASSWORD, |v| {
                decode_string(tag::PASSWORD, v, MAX_PASSWORD)
            })?,
            certificate: fields.get(tag::CERTIFICATE, CertificateElement::decode)?,
            signed_data: fields.get(tag::SIGNED_DATA, |v| {
                decode_bytes(tag::SIGNED_DATA, v, MAX_SIGNED_DATA)
            })?,
            sha2_signed_data: fields.get(tag::SHA2_SIGNED_DATA, Sha2SignedData::decode)?,
            sudi: fields.get(tag::SUDI_DATA, SudiData::decode)?,
            extra: fields.extra,
        })
    }

    fn write(&self, out: &mut Writer) {
        out.put(tag::REASON, self.reason.map(|v| vec![v]));
        out.put(
            tag::CERTIFICATE,
            self.certificate.as_ref().map(CertificateElement::encode),
        );
        out.put(tag::SIGNED_DATA, self.signed_data.clone());
        out.put(tag::VERSION, self.version.map(|v| vec![v]));
        out.put(tag::PASSWORD, self.password.as_deref().map(encode_string));
        out.put(
            tag::DEVICE_NAME,
            self.device_name.as_deref().map(encode_string),
        );
        out.put(tag::SUDI_DATA, self.sudi.as_ref().map(SudiData::encode));
        out.put(
            tag::SHA2_SIGNED_DATA,
            self.sha2_signed_data.as_ref().map(Sha2SignedData::encode),
        );
    }

    fn extra(&self) -> &Extra {
        &self.extra
    }
}

impl Typed for KeyGenerateRequest {
    const TAGS: &'static [u8] = &[tag::KEY_SIZE, tag::KEY_TYPE, tag::CURVE];

    fn read(fields: Fields<'_>) -> Result<Self, DecodeError> {
        Ok(KeyGenerateRequest {
            key_size: fields.get(tag::KEY_SIZE, |v| decode_u16(tag::KEY_SIZE, v))?,
            key_type: fields.u8(tag::KEY_TYPE)?,
            curve: fields.u8(tag::CURVE)?,
            extra: fields.extra,
        })
    }

    fn write(&self, out: &mut Writer) {
        out.put(
            tag::KEY_SIZE,
            self.key_size.map(|v| v.to_be_bytes().to_vec()),
        );
        out.put(tag::KEY_TYPE, self.key_type.map(|v| vec![v]));
        out.put(tag::CURVE, self.curve.map(|v| vec![v]));
    }

    fn extra(&self) -> &Extra {
        &self.extra
    }
}

impl Typed for KeyGenerateResponse {
    const TAGS: &'static [u8] = &[tag::REASON, tag::PUBLIC_KEY];

    fn read(fields: Fields<'_>) -> Result<Self, DecodeError> {
        Ok(KeyGenerateResponse {
            public_key: fields.get(tag::PUBLIC_KEY, |v| {
                decode_bytes(tag::PUBLIC_KEY, v, MAX_PUBLIC_KEY)
            })?,
            reason: fields.u8(tag::REASON)?,
            extra: fields.extra,
        })
    }

    fn write(&self, out: &mut Writer) {
        out.put(tag::REASON, self.reason.map(|v| vec![v]));
        out.put(tag::PUBLIC_KEY, self.public_key.clone());
    }

    fn extra(&self) -> &Extra {
        &self.extra
    }
}

impl Typed for StoreCertificateRequest {
    const TAGS: &'static [u8] = &[tag::CERTIFICATE_TYPE, tag::CERTIFICATE];

    fn read(fields: Fields<'_>) -> Result<Self, DecodeError> {
        Ok(StoreCertificateRequest {
            certificate_type: fields.u8(tag::CERTIFICATE_TYPE)?,
            certificate: fields.get(tag::CERTIFICATE, CertificateElement::decode)?,
            extra: fields.extra,
        })
    }

    fn write(&self, out: &mut Writer) {
        out.put(
            tag::CERTIFICATE_TYPE,
            self.certificate_type.map(|v| vec![v]),
        );
        out.put(
            tag::CERTIFICATE,
            self.certificate.as_ref().map(CertificateElement::encode),
        );
    }

    fn extra(&self) -> &Extra {
        &self.extra
    }
}

impl Typed for FetchCertificateResponse {
    const TAGS: &'static [u8] = &[tag::REASON, tag::CERTIFICATE];

    fn read(fields: Fields<'_>) -> Result<Self, DecodeError> {
        Ok(FetchCertificateResponse {
            reason: fields.u8(tag::REASON)?,
            certificate: fields.get(tag::CERTIFICATE, CertificateElement::decode)?,
            extra: fields.extra,
        })
    }

    fn write(&self, out: &mut Writer) {
        out.put(tag::REASON, self.reason.map(|v| vec![v]));
        out.put(
            tag::CERTIFICATE,
            self.certificate.as_ref().map(CertificateElement::encode),
        );
    }

    fn extra(&self) -> &Extra {
        &self.extra
    }
}

impl Typed for ReasonOnly {
    const TAGS: &'static [u8] = &[tag::REASON];

    fn read(fields: Fields<'_>) -> Result<Self, DecodeError> {
        Ok(ReasonOnly {
            reason: fields.u8(tag::REASON)?,
            extra: fields.extra,
        })
    }

    fn write(&self, out: &mut Writer) {
        out.put(tag::REASON, self.reason.map(|v| vec![v]));
    }

    fn extra(&self) -> &Extra {
        &self.extra
    }
}

impl Typed for Empty {
    const TAGS: &'static [u8] = &[];

    fn read(fields: Fields<'_>) -> Result<Self, DecodeError> {
        Ok(Empty {
            extra: fields.extra,
        })
    }

    fn write(&self, _out: &mut Writer) {}

    fn extra(&self) -> &Extra {
        &self.extra
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{cert_type, hash_id, reason};

    fn el(tag: u8, value: &[u8]) -> Element {
        Element::new(tag, value.to_vec())
    }

    fn frame(command: u8, elements: Vec<Element>) -> Frame {
        Frame {
            command,
            session_id: 0x1a2b_3c41,
            elements,
        }
    }

    fn auth_response(elements: Vec<Element>) -> Result<AuthResponse, DecodeError> {
        match Message::from_frame(&frame(command::AUTH_RESPONSE, elements))? {
            Message::AuthResponse(m) => Ok(m),
            other => panic!("typed as {}", other.name()),
        }
    }

    fn kind_of(command: u8, elements: Vec<Element>) -> &'static str {
        Message::from_frame(&frame(command, elements))
            .unwrap_err()
            .kind()
    }

    fn round_trips(f: &Frame) {
        let message = Message::from_frame(f).unwrap();
        assert_eq!(&message.to_frame(f.session_id), f);
    }

    fn cert_entry(marker: u8, cert_type: u8, der: &[u8]) -> Vec<u8> {
        let mut out = vec![marker];
        out.extend_from_slice(&((der.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&[0, cert_type]);
        out.extend_from_slice(der);
        out
    }

    fn block(id: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![id];
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
        out
    }

    fn sudi(ids: [u8; 3]) -> Vec<u8> {
        [
            block(ids[0], b"cert"),
            block(ids[1], b"sig1"),
            block(ids[2], b"sig2"),
        ]
        .concat()
    }

    #[test]
    fn auth_response_with_password_decodes() {
        let m = auth_response(vec![
            el(tag::REASON, &[1]),
            el(tag::VERSION, &[3]),
            el(tag::PASSWORD, b"123456\0"),
            el(tag::DEVICE_NAME, b"SEP001122334455\0"),
        ])
        .unwrap();
        assert_eq!(m.reason, Some(reason::UPDATE_CERTIFICATE));
        assert_eq!(m.version, Some(3));
        assert_eq!(m.password.as_deref(), Some("123456"));
        assert_eq!(m.device_name.as_deref(), Some("SEP001122334455"));
        assert!(m.extra.is_empty());
    }

    #[test]
    fn single_nul_password_is_empty_string() {
        let m = auth_response(vec![el(tag::PASSWORD, &[0])]).unwrap();
        assert_eq!(m.password.as_deref(), Some(""));
        assert_eq!(
            Message::AuthResponse(m).to_frame(1).elements,
            vec![el(tag::PASSWORD, &[0])]
        );
    }

    #[test]
    fn fixed_size_elements_require_exact_length() {
        let cases = [
            (command::AUTH_RESPONSE, tag::REASON, 1),
            (command::AUTH_RESPONSE, tag::VERSION, 1),
            (command::AUTH_REQUEST, tag::AUTH_TYPE, 1),
            (command::KEY_GENERATE_REQUEST, tag::KEY_TYPE, 1),
            (command::KEY_GENERATE_REQUEST, tag::CURVE, 1),
            (command::KEY_GENERATE_REQUEST, tag::KEY_SIZE, 2),
            (command::STORE_CERTIFICATE_REQUEST, tag::CERTIFICATE_TYPE, 1),
            (command::END_SESSION, tag::REASON, 1),
        ];
        for (cmd, t, expected) in cases {
            for len in [0, expected - 1, expected + 1, expected + 2] {
                if len == expected {
                    continue;
                }
                let err = Message::from_frame(&frame(cmd, vec![el(t, &vec![7; len])])).unwrap_err();
                assert_eq!(
                    err,
                    DecodeError::BadFixedLength {
                        tag: t,
                        len,
                        expected
                    },
                    "{} in {}",
                    tag::name(t),
                    command::name(cmd)
                );
                assert_eq!(err.kind(), "bad-fixed-length");
            }
        }
    }

    #[test]
    fn string_rules() {
        for t in [tag::DEVICE_NAME, tag::PASSWORD] {
            let cases: [(&[u8], &str); 6] = [
                (b"", "empty-element"),
                (b"SEP1", "string-not-terminated"),
                (b"SEP1\0\0", "string-embedded-nul"),
                (b"SE\0P\0", "string-embedded-nul"),
                (b"SEP\x071\0", "string-not-printable"),
                (b"S\xc3\xa9P\0", "string-not-printable"),
            ];
            for (value, kind) in cases {
                assert_eq!(
                    kind_of(command::AUTH_RESPONSE, vec![el(t, value)]),
                    kind,
                    "{} {value:?}",
                    tag::name(t)
                );
            }
        }
        // Space and tilde are the printable bounds.
        let m = auth_response(vec![el(tag::DEVICE_NAME, b" ~\0")]).unwrap();
        assert_eq!(m.device_name.as_deref(), Some(" ~"));
    }

    #[test]
    fn string_size_limits() {
        let name16 = b"SEP001122334455\0";
        assert!(auth_response(vec![el(tag::DEVICE_NAME, name16)]).is_ok());
        let err = auth_response(vec![el(tag::DEVICE_NAME, b"SEP0011223344556\0")]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::ElementTooLong {
                tag: tag::DEVICE_NAME,
                len: 17,
                max: 16
            }
        );
        assert_eq!(err.kind(), "element-too-long");

        assert!(auth_response(vec![el(tag::PASSWORD, b"1234567890123456\0")]).is_ok());
        assert_eq!(
            kind_of(
                command::AUTH_RESPONSE,
                vec![el(tag::PASSWORD, b"12345678901234567\0")]
            ),
            "element-too-long"
        );
    }

    #[test]
    fn binary_element_limits() {
        let cases = [
            (command::AUTH_RESPONSE, tag::SIGNED_DATA, MAX_SIGNED_DATA),
            (
                command::KEY_GENERATE_RESPONSE,
                tag::PUBLIC_KEY,
                MAX_PUBLIC_KEY,
            ),
        ];
        for (cmd, t, max) in cases {
            assert!(Message::from_frame(&frame(cmd, vec![el(t, &vec![1; max])])).is_ok());
            let err = Message::from_frame(&frame(cmd, vec![el(t, &vec![1; max + 1])])).unwrap_err();
            assert_eq!(
                err,
                DecodeError::ElementTooLong {
                    tag: t,
                    len: max + 1,
                    max
                }
            );
            assert_eq!(
                Message::from_frame(&frame(cmd, vec![el(t, &[])])).unwrap_err(),
                DecodeError::EmptyElement { tag: t }
            );
        }
    }

    #[test]
    fn duplicate_known_tag_is_rejected_even_when_not_interpreted() {
        let err = auth_response(vec![
            el(tag::DEVICE_NAME, b"SEP001122334455\0"),
            el(tag::DEVICE_NAME, b"SEP0A0B0C0D0E0F\0"),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            DecodeError::DuplicateElement {
                tag: tag::DEVICE_NAME
            }
        );
        assert_eq!(err.kind(), "duplicate-element");
        // KEY_SIZE means nothing in END_SESSION, but a repeat is still refused.
        assert_eq!(
            kind_of(
                command::END_SESSION,
                vec![el(tag::KEY_SIZE, &[8, 0]), el(tag::KEY_SIZE, &[8, 0])]
            ),
            "duplicate-element"
        );
    }

    #[test]
    fn unknown_tags_are_kept_in_order_even_repeated() {
        let f = frame(
            command::AUTH_RESPONSE,
            vec![
                el(tag::REASON, &[1]),
                el(99, &[0xab, 0xcd]),
                el(tag::VERSION, &[3]),
                el(99, &[]),
                el(14, &[1]),
            ],
        );
        let m = auth_response(f.elements.clone()).unwrap();
        assert_eq!(m.extra.unknown_tags().collect::<Vec<_>>(), vec![99, 99, 14]);
        assert_eq!(m.reason, Some(1));
        assert_eq!(m.version, Some(3));
        round_trips(&f);
    }

    #[test]
    fn irrelevant_known_tags_are_kept_raw_and_not_unknown() {
        // KEY_SIZE of the wrong size inside an AUTH_RESPONSE: not interpreted, not checked.
        let f = frame(
            command::AUTH_RESPONSE,
            vec![el(tag::REASON, &[1]), el(tag::KEY_SIZE, &[1, 2, 3])],
        );
        let m = auth_response(f.elements.clone()).unwrap();
        assert_eq!(m.extra.elements(), &[el(tag::KEY_SIZE, &[1, 2, 3])]);
        assert_eq!(m.extra.unknown_tags().count(), 0);
        round_trips(&f);
    }

    #[test]
    fn non_ascending_order_is_preserved() {
        // Jabber order: VERSION, DEVICE_NAME, REASON.
        let f = frame(
            command::AUTH_RESPONSE,
            vec![
                el(tag::VERSION, &[2]),
                el(tag::DEVICE_NAME, b"CSF123\0"),
                el(tag::REASON, &[1]),
            ],
        );
        let m = auth_response(f.elements.clone()).unwrap();
        assert!(!m.extra.is_empty());
        round_trips(&f);

        // A fresh message goes out in ascending order.
        let fresh = AuthResponse {
            extra: Extra::default(),
            ..m.clone()
        };
        let tags: Vec<u8> = Message::AuthResponse(fresh)
            .to_frame(1)
            .elements
            .iter()
            .map(|e| e.tag)
            .collect();
        assert_eq!(tags, vec![tag::REASON, tag::VERSION, tag::DEVICE_NAME]);

        // A field added after decoding is appended, the recorded order kept for the rest.
        let mut changed = m;
        changed.password = Some("1".into());
        changed.version = None;
        let tags: Vec<u8> = Message::AuthResponse(changed)
            .to_frame(1)
            .elements
            .iter()
            .map(|e| e.tag)
            .collect();
        assert_eq!(tags, vec![tag::DEVICE_NAME, tag::REASON, tag::PASSWORD]);
    }

    #[test]
    fn certificate_element_layout() {
        let der = [0x30, 0x03, 0x02, 0x01, 0x05];
        let value = cert_entry(1, cert_type::LSC, &der);
        assert_eq!(&value[..5], &[0x01, 0x00, 0x07, 0x00, 0x01]);
        let f = frame(
            command::STORE_CERTIFICATE_REQUEST,
            vec![
                el(tag::CERTIFICATE_TYPE, &[1]),
                el(tag::CERTIFICATE, &value),
            ],
        );
        let Message::StoreCertificateRequest(m) = Message::from_frame(&f).unwrap() else {
            panic!("wrong type");
        };
        assert_eq!(
            m,
            StoreCertificateRequest::new(cert_type::LSC, der.to_vec())
        );
        assert_eq!(m.certificate.as_ref().unwrap().first().der, der);
        round_trips(&f);
    }

    #[test]
    fn certificate_element_with_several_entries_keeps_every_byte() {
        let value = [cert_entry(1, 1, b"first"), cert_entry(7, 2, b"second")].concat();
        let mut with_reserved = value.clone();
        with_reserved[3] = 0x42;
        let f = frame(
            command::FETCH_CERTIFICATE_RESPONSE,
            vec![el(tag::REASON, &[1]), el(tag::CERTIFICATE, &with_reserved)],
        );
        let Message::FetchCertificateResponse(m) = Message::from_frame(&f).unwrap() else {
            panic!("wrong type");
        };
        let cert = m.certificate.unwrap();
        assert_eq!(cert.entries.len(), 2);
        assert_eq!(cert.first().der, b"first");
        assert_eq!(cert.first().reserved, 0x42);
        assert_eq!(cert.entries[1].marker, 7);
        assert_eq!(cert.entries[1].cert_type, cert_type::MIC);
        round_trips(&f);
    }

    #[test]
    fn certificate_element_errors() {
        let good = cert_entry(1, 1, b"der");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "empty-element"),
            (good[..2].to_vec(), "bad-certificate-entry"),
            (good[..good.len() - 1].to_vec(), "bad-certificate-entry"),
            ([good.clone(), vec![1]].concat(), "bad-certificate-entry"),
            (vec![1, 0, 1, 0], "bad-certificate-entry"),
            (vec![1, 0, 2, 0, 1], "bad-certificate-entry"),
            (
                cert_entry(1, 1, &vec![0x30; MAX_CERTIFICATE]),
                "element-too-long",
            ),
        ];
        for (value, kind) in cases {
            assert_eq!(
                kind_of(
                    command::STORE_CERTIFICATE_REQUEST,
                    vec![el(tag::CERTIFICATE, &value)]
                ),
                kind,
                "{value:02x?}"
            );
        }
        assert!(CertificateElement { entries: vec![] }
            .first()
            .der
            .is_empty());
    }

    #[test]
    fn sha2_signed_data() {
        for id in [hash_id::SHA256, hash_id::SHA512] {
            let value = [vec![id, 0, 3], b"sig".to_vec()].concat();
            let m = auth_response(vec![el(tag::SHA2_SIGNED_DATA, &value)]).unwrap();
            assert_eq!(
                m.sha2_signed_data,
                Some(Sha2SignedData {
                    hash_id: id,
                    signature: b"sig".to_vec()
                })
            );
            assert_eq!(
                Message::AuthResponse(m).to_frame(1).elements,
                vec![el(tag::SHA2_SIGNED_DATA, &value)]
            );
        }
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "empty-element"),
            (vec![3, 0], "bad-sha2-signed-data"),
            (vec![1, 0, 1, 9], "bad-sha2-signed-data"),
            (vec![0, 0, 1, 9], "bad-sha2-signed-data"),
            (vec![3, 0, 2, 9], "bad-sha2-signed-data"),
            (vec![3, 0, 1, 9, 9], "bad-sha2-signed-data"),
            (vec![3, 0, 0], "bad-sha2-signed-data"),
            (
                [vec![3, 0x04, 0x01], vec![9; 1025]].concat(),
                "element-too-long",
            ),
        ];
        for (value, kind) in cases {
            assert_eq!(
                kind_of(
                    command::AUTH_RESPONSE,
                    vec![el(tag::SHA2_SIGNED_DATA, &value)]
                ),
                kind,
                "{value:02x?}"
            );
        }
    }

    #[test]
    fn sudi_data() {
        for id in [hash_id::SHA256, hash_id::SHA512] {
            let value = sudi([0, 1, id]);
            let m = auth_response(vec![el(tag::SUDI_DATA, &value)]).unwrap();
            assert_eq!(
                m.sudi,
                Some(SudiData {
                    certificate: b"cert".to_vec(),
                    sha1_signature: b"sig1".to_vec(),
                    sha2_hash_id: id,
                    sha2_signature: b"sig2".to_vec(),
                })
            );
            assert_eq!(
                Message::AuthResponse(m).to_frame(1).elements,
                vec![el(tag::SUDI_DATA, &value)]
            );
        }
        let good = sudi([0, 1, 3]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "empty-element"),
            (block(0, b"cert"), "bad-sudi-data"),
            ([block(0, b"c"), block(1, b"s")].concat(), "bad-sudi-data"),
            (good[..good.len() - 1].to_vec(), "bad-sudi-data"),
            ([good.clone(), vec![0]].concat(), "bad-sudi-data"),
            (sudi([1, 1, 3]), "bad-sudi-data"),
            (sudi([0, 2, 3]), "bad-sudi-data"),
            (sudi([0, 1, 1]), "bad-sudi-data"),
            (sudi([0, 1, 4]), "bad-sudi-data"),
            (
                [block(0, b""), block(1, b"s"), block(3, b"s")].concat(),
                "bad-sudi-data",
            ),
            (
                [
                    block(0, &vec![0x30; 10_000]),
                    block(1, &[1; 1500]),
                    block(3, &[1; 1000]),
                ]
                .concat(),
                "element-too-long",
            ),
        ];
        for (value, kind) in cases {
            assert_eq!(
                kind_of(command::AUTH_RESPONSE, vec![el(tag::SUDI_DATA, &value)]),
                kind
            );
        }
    }

    #[test]
    fn key_generate_request_for_each_key_spec() {
        let rsa = KeyGenerateRequest::for_key(KeySpec::Rsa(2048));
        assert_eq!(
            Message::KeyGenerateRequest(rsa.clone())
                .encode(0x1a2b_3c41)
                .unwrap(),
            // Flow 01, frame 3: KEY_SIZE=2048; KEY_TYPE=0.
            hex::decode("55031a2b3c4100090a0002080011000100").unwrap()
        );
        assert_eq!(rsa.key_spec(), Some(KeySpec::Rsa(2048)));
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            let ec = KeyGenerateRequest::for_key(KeySpec::Ec(curve));
            assert_eq!(ec.key_size, None);
            assert_eq!(ec.key_type, Some(key_type::EC));
            assert_eq!(ec.curve, Some(curve.wire_value()));
            assert_eq!(ec.key_spec(), Some(KeySpec::Ec(curve)));
        }
        let no_type = KeyGenerateRequest {
            key_size: Some(1024),
            ..Default::default()
        };
        assert_eq!(no_type.key_spec(), Some(KeySpec::Rsa(1024)));
        let bad_curve = KeyGenerateRequest {
            key_type: Some(key_type::EC),
            curve: Some(9),
            ..Default::default()
        };
        assert_eq!(bad_curve.key_spec(), None);
    }

    #[test]
    fn commands_without_typed_view_stay_raw() {
        for cmd in [0, 5, 6, 7, 8, 16, 18, 19, 20, 21, 22, 23, 24, 255] {
            // Even elements that would be malformed in a typed view pass through untouched.
            let f = frame(
                cmd,
                vec![el(tag::REASON, &[]), el(tag::REASON, &[1, 2]), el(99, &[1])],
            );
            let m = Message::from_frame(&f).unwrap();
            assert_eq!(m, Message::Other(f.clone()));
            assert_eq!(m.command(), cmd);
            assert_eq!(m.name(), command::name(cmd));
            assert_eq!(m.to_frame(f.session_id), f);
        }
    }

    #[test]
    fn empty_messages_and_reason_only() {
        for (cmd, message) in [
            (
                command::FETCH_CERTIFICATE_REQUEST,
                Message::FetchCertificateRequest(Empty::default()),
            ),
            (
                command::DELETE_CERTIFICATE_REQUEST,
                Message::DeleteCertificateRequest(Empty::default()),
            ),
            (
                command::REQUEST_IN_PROGRESS,
                Message::RequestInProgress(Empty::default()),
            ),
            (
                command::END_SESSION,
                Message::EndSession(ReasonOnly::new(reason::UNKNOWN_DEVICE)),
            ),
            (
                command::STORE_CERTIFICATE_RESPONSE,
                Message::StoreCertificateResponse(ReasonOnly::new(reason::UPDATE_CERTIFICATE)),
            ),
            (
                command::DELETE_CERTIFICATE_RESPONSE,
                Message::DeleteCertificateResponse(ReasonOnly::new(reason::INVALID_ELEMENT)),
            ),
        ] {
            assert_eq!(message.command(), cmd);
            let bytes = message.encode(42).unwrap();
            assert_eq!(Message::decode(&bytes).unwrap(), (42, message));
        }
        assert_eq!(
            Message::EndSession(ReasonOnly::new(reason::NO_ACTION))
                .encode(0x1a2b_3c41)
                .unwrap(),
            [0x55, 0x0f, 0x1a, 0x2b, 0x3c, 0x41, 0x00, 0x04, 0x01, 0x00, 0x01, 0x00]
        );
    }

    #[test]
    fn decode_reports_frame_errors_too() {
        assert_eq!(
            Message::decode(&[0x55]).unwrap_err().kind(),
            "truncated-header"
        );
        let bytes = [0x55, 0x0f, 0, 0, 0, 1, 0, 3, 0x01, 0x00, 0x00];
        assert_eq!(
            Message::decode(&bytes).unwrap_err().kind(),
            "bad-fixed-length"
        );
    }

    #[test]
    fn auth_response_debug_hides_password() {
        let m = auth_response(vec![
            el(tag::PASSWORD, b"987654\0"),
            el(tag::DEVICE_NAME, b"SEP001122334455\0"),
            el(99, b"987654"),
        ])
        .unwrap();
        let text = format!("{m:?}");
        assert!(!text.contains("987654"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
        assert!(text.contains("SEP001122334455"), "{text}");
        let none = format!("{:?}", AuthResponse::default());
        assert!(none.contains("password: None"), "{none}");
    }
}
