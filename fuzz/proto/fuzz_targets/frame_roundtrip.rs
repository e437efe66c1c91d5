//! The codec on arbitrary bytes: decoding never panics, and whatever decodes encodes back to
//! the same bytes and decodes again to the same value (frame layer and typed layer).
#![no_main]

use capf_proto::{Frame, Header, Message, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Frame layer: exactly one whole frame.
    let frame = Frame::decode(data);
    if let Ok(frame) = &frame {
        let bytes = frame.encode().expect("a decoded frame encodes");
        // Decoding checks the announced length, so the encoding is the input itself.
        assert_eq!(bytes, data, "frame did not re-encode byte for byte");
        let again = Frame::decode(&bytes).expect("an encoded frame decodes");
        assert_eq!(&again, frame);
    }

    // Typed layer: it only ever adds failures on top of the frame layer.
    match Message::decode(data) {
        Ok((session_id, message)) => {
            let frame = frame.as_ref().expect("the typed layer accepted a bad frame");
            assert_eq!(session_id, frame.session_id);
            assert_eq!(message.command(), frame.command);
            let bytes = message.encode(session_id).expect("a decoded message encodes");
            assert_eq!(bytes, data, "message did not re-encode byte for byte");
            let (again_id, again) = Message::decode(&bytes).expect("an encoded message decodes");
            assert_eq!(again_id, session_id);
            assert_eq!(again, message);
            // Logs print messages with {:?}; that must hold for anything that decodes.
            let _ = format!("{message:?} {}", message.name());
        }
        Err(e) => {
            if let Err(frame_error) = &frame {
                assert_eq!(&e, frame_error);
            }
            let _ = (e.kind(), e.to_string());
        }
    }

    // What a reader does: the header first, then exactly the body it announces.
    if let Some((head, rest)) = data.split_first_chunk::<HEADER_LEN>() {
        if let Ok(header) = Header::decode(head) {
            assert_eq!(&header.encode(), head);
            let body = rest.get(..usize::from(header.body_len)).unwrap_or(rest);
            if let Ok(frame) = Frame::decode_body(&header, body) {
                let bytes = frame.encode().expect("a decoded body encodes");
                assert_eq!(&bytes[..HEADER_LEN], head);
                assert_eq!(&bytes[HEADER_LEN..], body);
            }
        }
    }
});
