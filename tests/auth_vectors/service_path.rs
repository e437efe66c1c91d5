//! Through the service: AUTH_RESPONSE decoded by the codec, then checked by the server's
//! `verify_auth_response`.

use super::*;

// The service's own path: the AUTH_RESPONSE frame decoded by the codec, then turned into a
// certificate-authentication request by `verify_auth_response` (further certificates, SUDI
// blocks and session id as the server takes them).

/// The decoded AUTH_RESPONSE of a vector, with its session id and device name.
fn decoded_auth_response(file: &str) -> (u32, String, capf_proto::AuthResponse) {
    let text = read(file);
    let frame = text
        .lines()
        .filter_map(|l| l.strip_prefix("C>S "))
        .map(|h| hex::decode(h.trim()).unwrap())
        .find(|f| capf_proto::Command::from(f[1]) == capf_proto::Command::AuthResponse)
        .unwrap();
    let (session, message) = capf_proto::Message::decode(&frame).unwrap();
    let capf_proto::Message::AuthResponse(response) = message else {
        panic!("{file}: not an AUTH_RESPONSE");
    };
    let device = response.device_name.clone().unwrap();
    (session, device, response)
}

fn verify_through_service(
    response: &capf_proto::AuthResponse,
    device: &str,
    session: u32,
) -> Result<CertKind, AuthError> {
    capf_server::service::verify_auth_response(
        response,
        device,
        session,
        &vector_anchors(),
        &policy(),
        now(),
    )
    .expect("certificate and both signatures are present")
    .map(|v| v.kind)
}

#[test]
fn decoded_vectors_authenticate_through_the_service_path_and_tampering_is_refused() {
    for (file, kind) in [
        ("04-install-mic-auth-rsa3072.txt", CertKind::Mic),
        ("05-install-lsc-auth-ec-secp384r1.txt", CertKind::Lsc),
    ] {
        let (session, device, response) = decoded_auth_response(file);
        assert!(response.sudi.is_some(), "{file} carries SUDI");
        assert_eq!(
            verify_through_service(&response, &device, session).unwrap(),
            kind,
            "{file}"
        );

        let mut tampered = Vec::new();
        let mut r = response.clone();
        flip_last(r.signed_data.as_mut().unwrap());
        tampered.push(("SIGNED_DATA", r, session));
        let mut r = response.clone();
        flip_last(&mut r.sha2_signed_data.as_mut().unwrap().signature);
        tampered.push(("SHA2_SIGNED_DATA", r, session));
        let mut r = response.clone();
        let cert = &mut r.certificate.as_mut().unwrap().entries[0].der;
        let middle = cert.len() / 2;
        cert[middle] ^= 0x01;
        tampered.push(("certificate", r, session));
        let mut r = response.clone();
        flip_last(&mut r.sudi.as_mut().unwrap().sha1_signature);
        tampered.push(("SUDI SHA-1 signature", r, session));
        let mut r = response.clone();
        flip_last(&mut r.sudi.as_mut().unwrap().sha2_signature);
        tampered.push(("SUDI SHA-2 signature", r, session));
        // The SUDI signs the session id: another session's id is refused.
        tampered.push(("session id", response.clone(), session ^ 1));
        tampered.push((
            "session id byte order",
            response.clone(),
            session.swap_bytes(),
        ));
        for (what, r, session) in tampered {
            assert!(
                verify_through_service(&r, &device, session).is_err(),
                "{file}: tampered {what} accepted"
            );
        }
        // Another device's name over the same certificate and signatures is refused.
        assert!(verify_through_service(&response, "SEP0000000000FF", session).is_err());
    }
}
