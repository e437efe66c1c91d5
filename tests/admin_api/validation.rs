//! Every validation message, and hostile request bodies.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn every_validation_message_and_hostile_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(&common::db::Engine::Sqlite, dir.path()).await;
    let server = TestServer::start(dir.path(), &db.url, &[]);
    let api = Api::new(&server.api, &admin_token(dir.path()));
    let op = "/api/v1/devices/SEP001122334455/operation";
    let string_mode = |extra: Value| {
        let mut body = json!({"operation": "install", "auth_mode": "string"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            string_mode(json!({"auth_string": "12a4"})),
            "auth_string",
            MSG_AUTH_CHARS,
        ),
        (
            string_mode(json!({"auth_string": "123"})),
            "auth_string",
            MSG_AUTH_LENGTH,
        ),
        (
            string_mode(json!({"auth_string": "12345678901"})),
            "auth_string",
            MSG_AUTH_LENGTH,
        ),
        (
            string_mode(json!({"auth_string": "1234", "completes_by": "2020-01-01T00:00:00Z"})),
            "completes_by",
            MSG_COMPLETES_BY_PAST,
        ),
        (
            string_mode(json!({"auth_string": "1234", "completes_by": "next tuesday"})),
            "completes_by",
            MSG_COMPLETES_BY_FORMAT,
        ),
        (string_mode(json!({})), "auth_string", MSG_AUTH_REQUIRED),
        (
            string_mode(json!({"auth_string": "1234", "generate_auth_string": true})),
            "auth_string",
            MSG_AUTH_BOTH,
        ),
        (
            string_mode(json!({"auth_string": "1234", "key": "rsa-512"})),
            "key",
            MSG_KEY,
        ),
        (
            json!({"operation": "install", "auth_mode": "null", "auth_string": "1234"}),
            "auth_string",
            MSG_AUTH_NOT_STRING_MODE,
        ),
        (
            json!({"operation": "reboot", "auth_mode": "null"}),
            "operation",
            MSG_OPERATION,
        ),
        (
            json!({"operation": "install", "auth_mode": "pin"}),
            "auth_mode",
            MSG_AUTH_MODE,
        ),
        (
            json!({"operation": "install", "auth_mode": "null", "colour": 1}),
            "colour",
            "Unknown field.",
        ),
    ];
    for (body, field, message) in cases {
        let (status, answer) = api.put(op, body.clone()).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(
            messages(&answer),
            vec![(field.to_string(), message.to_string())],
            "{body}"
        );
    }
    // A bad device name is reported together with the other fields.
    let (status, answer) = api
        .put(
            "/api/v1/devices/SEP0011/operation",
            json!({"operation": "install", "auth_mode": "string", "auth_string": "x"}),
        )
        .await;
    assert_eq!(status, 422);
    let fields: Vec<String> = messages(&answer).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["device", "auth_string"]);

    // Hostile bodies and parameters: a clear 4xx, never a 500, and the server keeps serving.
    let hostile: Vec<(Method, &str, &str, Vec<u8>)> = vec![
        (Method::PUT, op, "application/json", b"not json".to_vec()),
        (Method::PUT, op, "application/json", b"[1,2,3]".to_vec()),
        (Method::PUT, op, "application/json", vec![0xff, 0xfe, 0x00]),
        (
            Method::PUT,
            op,
            "application/json",
            b"{\"operation\": {\"a\": [[[[[]]]]]}}".to_vec(),
        ),
        (
            Method::PUT,
            "/api/v1/devices/%00%ff/operation",
            "application/json",
            b"{}".to_vec(),
        ),
        (
            Method::PUT,
            "/api/v1/devices/SEP0011223344556/operation",
            "application/json",
            b"{}".to_vec(),
        ),
        (Method::GET, "/api/v1/devices?status=everything", "", vec![]),
        (Method::GET, "/api/v1/devices?limit=0", "", vec![]),
        (
            Method::GET,
            "/api/v1/devices?limit=99999999999999999999",
            "",
            vec![],
        ),
        (
            Method::GET,
            "/api/v1/devices?lsc_expires_before=yesterday",
            "",
            vec![],
        ),
        (Method::GET, "/api/v1/events?after=x", "", vec![]),
        (
            Method::POST,
            "/api/v1/operations/bulk",
            "text/csv",
            b"\xff\xfe,\n\x00".to_vec(),
        ),
        (
            Method::POST,
            "/api/v1/operations/bulk",
            "application/json",
            b"{\"rows\": 1}".to_vec(),
        ),
        (
            Method::POST,
            "/api/v1/operations/bulk?dry_run=maybe",
            "text/csv",
            b"device\n".to_vec(),
        ),
        (
            Method::PATCH,
            "/api/v1/devices/SEP001122334455",
            "application/json",
            b"{\"require_sudi\": 1}".to_vec(),
        ),
    ];
    for (method, path, content_type, body) in hostile {
        let (status, _, answer) = api
            .raw(Some(&api.token), method.clone(), path, content_type, body)
            .await;
        assert!(
            (400..500).contains(&status),
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert_eq!(api.get("/api/v1/devices").await.0, 200);
    drop(server);
    db.drop_db().await;
}
