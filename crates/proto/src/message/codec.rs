//! How a typed view reads and writes its elements: the value codecs, the split of a frame's
//! elements into interpreted ones and [`Extra`], and the `typed_message!` declaration that
//! names each tag of a message once.

use super::Extra;
use crate::error::DecodeError;
use crate::frame::Element;
use crate::Tag;

/// How the value of one element is checked, read and written.
pub(super) trait Codec<T> {
    fn decode(tag: Tag, value: &[u8]) -> Result<T, DecodeError>;
    fn encode(value: &T) -> Vec<u8>;
}

/// Fixed 1 byte: a number or a wire enum.
pub(super) struct Byte;

impl<T: From<u8> + Copy> Codec<T> for Byte
where
    u8: From<T>,
{
    fn decode(tag: Tag, value: &[u8]) -> Result<T, DecodeError> {
        match value {
            [byte] => Ok(T::from(*byte)),
            _ => Err(DecodeError::BadFixedLength {
                tag,
                len: value.len(),
                expected: 1,
            }),
        }
    }

    fn encode(value: &T) -> Vec<u8> {
        vec![u8::from(*value)]
    }
}

/// Fixed 2 bytes, big-endian.
pub(super) struct U16;

impl Codec<u16> for U16 {
    fn decode(tag: Tag, value: &[u8]) -> Result<u16, DecodeError> {
        match value {
            [hi, lo] => Ok(u16::from_be_bytes([*hi, *lo])),
            _ => Err(DecodeError::BadFixedLength {
                tag,
                len: value.len(),
                expected: 2,
            }),
        }
    }

    fn encode(value: &u16) -> Vec<u8> {
        value.to_be_bytes().to_vec()
    }
}

/// A NUL-terminated printable ASCII string of at most `MAX` bytes, NUL included (DEVICE_NAME,
/// PASSWORD); held without the NUL.
pub(super) struct Text<const MAX: usize>;

impl<const MAX: usize> Codec<String> for Text<MAX> {
    fn decode(tag: Tag, value: &[u8]) -> Result<String, DecodeError> {
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
        if value.len() > MAX {
            return Err(DecodeError::ElementTooLong {
                tag,
                len: value.len(),
                max: MAX,
            });
        }
        // Printable ASCII is valid UTF-8, so this conversion cannot fail.
        Ok(text.iter().map(|&b| char::from(b)).collect())
    }

    fn encode(text: &String) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 1);
        out.extend_from_slice(text.as_bytes());
        out.push(0);
        out
    }
}

/// Opaque non-empty bytes, at most `MAX` of them (SIGNED_DATA, PUBLIC_KEY).
pub(super) struct Bytes<const MAX: usize>;

impl<const MAX: usize> Codec<Vec<u8>> for Bytes<MAX> {
    fn decode(tag: Tag, value: &[u8]) -> Result<Vec<u8>, DecodeError> {
        check_len(tag, value, MAX)?;
        Ok(value.to_vec())
    }

    fn encode(value: &Vec<u8>) -> Vec<u8> {
        value.clone()
    }
}

/// An element with an inner layout of its own (module `layout`).
pub(super) trait Layout: Sized {
    fn decode(value: &[u8]) -> Result<Self, DecodeError>;
    fn encode(&self) -> Vec<u8>;
}

/// The codec of a [`Layout`] element.
pub(super) struct Nested;

impl<T: Layout> Codec<T> for Nested {
    fn decode(_tag: Tag, value: &[u8]) -> Result<T, DecodeError> {
        T::decode(value)
    }

    fn encode(value: &T) -> Vec<u8> {
        value.encode()
    }
}

/// Size limit first, then non-empty; for variable-length binary elements.
pub(super) fn check_len(tag: Tag, value: &[u8], max: usize) -> Result<(), DecodeError> {
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

/// The elements of one frame, split into those a typed view interprets and the rest.
pub(super) struct Fields<'a> {
    used: Vec<(Tag, &'a [u8])>,
    pub(super) extra: Extra,
}

impl<'a> Fields<'a> {
    fn split(elements: &'a [Element], interpreted: &[Tag]) -> Result<Self, DecodeError> {
        let mut seen = [false; 256];
        let mut used = Vec::new();
        let mut extra = Vec::new();
        let mut previous_tag = 0u8;
        let mut ascending = true;
        for element in elements {
            let number = u8::from(element.tag);
            if element.tag.is_known() {
                let seen = &mut seen[usize::from(number)];
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
            ascending &= number >= previous_tag;
            previous_tag = number;
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

    /// The value of `tag`, decoded by `C`, if the frame has one.
    pub(super) fn get<T, C: Codec<T>>(&self, tag: Tag) -> Result<Option<T>, DecodeError> {
        self.used
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, value)| C::decode(tag, value))
            .transpose()
    }
}

/// Known elements of a typed view, as written.
#[derive(Default)]
pub(super) struct Writer(Vec<Element>);

impl Writer {
    pub(super) fn put<T, C: Codec<T>>(&mut self, tag: Tag, value: Option<&T>) {
        if let Some(value) = value {
            self.0.push(Element::new(tag, C::encode(value)));
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
    rest.sort_by_key(|e| u8::from(e.tag));
    out.extend(rest);
    out
}

/// A typed view of the elements of one command; implemented by `typed_message!`.
pub(super) trait Typed: Sized {
    /// Tags this view interprets (and validates).
    const TAGS: &'static [Tag];
    fn read(fields: Fields<'_>) -> Result<Self, DecodeError>;
    fn write(&self, out: &mut Writer);
    fn extra(&self) -> &Extra;
}

pub(super) fn read<T: Typed>(elements: &[Element]) -> Result<T, DecodeError> {
    T::read(Fields::split(elements, T::TAGS)?)
}

pub(super) fn write<T: Typed>(message: &T) -> Vec<Element> {
    let mut writer = Writer::default();
    message.write(&mut writer);
    assemble(writer.0, message.extra())
}

/// Declares a typed message: a struct with one `Option` field per element it interprets,
/// plus `extra`, and its [`Typed`] implementation. Each field names its tag and its codec
/// once, here; decoding, encoding and the list of interpreted tags are all derived from
/// that line. Fields are decoded in the order declared, so the first malformed one is the
/// error reported.
macro_rules! typed_message {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident: $ty:ty = $tag:expr => $codec:ty, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$fmeta])* pub $field: Option<$ty>, )*
            pub extra: $crate::message::Extra,
        }

        impl $crate::message::codec::Typed for $name {
            const TAGS: &'static [$crate::Tag] = &[$($tag),*];

            fn read(
                fields: $crate::message::codec::Fields<'_>,
            ) -> Result<Self, $crate::DecodeError> {
                Ok($name {
                    $( $field: fields.get::<$ty, $codec>($tag)?, )*
                    extra: fields.extra,
                })
            }

            #[allow(unused_variables)]
            fn write(&self, out: &mut $crate::message::codec::Writer) {
                $( out.put::<$ty, $codec>($tag, self.$field.as_ref()); )*
            }

            fn extra(&self) -> &$crate::message::Extra {
                &self.extra
            }
        }
    };
}

pub(super) use typed_message;
