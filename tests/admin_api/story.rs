//! The end-to-end story, deadlines and key-generation limits.

use super::*;

/// Schedule by API, enroll with `capf phone`, see success, the LSC and the audit events
/// through the API and the CLI; then cancel, certificates, report.
#[tokio::test(flavor = "multi_thread")]
async fn end_to_end_story() {
    for engine in engines() {
        let (dir, db, server, api) = started(&engine, &[]).await;
        let device = "SEP00AABBCCDD01";
        let (status, body) = api
            .put(
                &format!("/api/v1/devices/{}/operation", device.to_lowercase()),
                json!({"operation": "install", "auth_mode": "string",
                       "generate_auth_string": true, "key": "ec-p256"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["device"], device, "SEP names are stored upper-case");
        assert_eq!(body["status"]["text"], "Operation Pending");
        let secret = body["auth_string"].as_str().unwrap().to_string();
        assert_eq!(check_auth_string(&secret), None);
        let completes_by = chrono::DateTime::parse_from_rfc3339(
            body["operation"]["completes_by"].as_str().unwrap(),
        )
        .unwrap();
        let days = (completes_by.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
        assert!(
            (167..=168).contains(&days),
            "default window is 7 days: {days} h"
        );
        // The admin sees the string to give the phone user; it is never in listings.
        let (_, shown) = api.get(&format!("/api/v1/devices/{device}")).await;
        assert_eq!(shown["operation"]["auth_string"], secret.as_str());
        let (_, listed) = api.get("/api/v1/devices").await;
        assert!(!listed.to_string().contains(&secret));

        let out = dir.path().join("lsc.pem");
        let (code, text) = server.phone(
            device,
            &["--auth-string", &secret, "--out", out.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{text}");

        // The attempt is recorded as the session ends, which may be just after the phone exits.
        let shown = settled(&api, device).await;
        assert_eq!(shown["status"]["text"], "Upgrade Success");
        assert_eq!(shown["status"]["code"], "success");
        assert!(shown["operation"].get("auth_string").is_none());
        assert_eq!(shown["lock"]["locked"], false);
        assert_eq!(shown["last_attempt"]["outcome"], "installed");
        assert_eq!(shown["last_attempt"]["source_addr"], "127.0.0.1");
        let serial = shown["lsc"]["serial"].as_str().unwrap().to_string();

        let (status, _, pem) = api
            .raw(
                Some(&api.token),
                Method::GET,
                &format!("/api/v1/devices/{device}/certificate"),
                "",
                vec![],
            )
            .await;
        assert_eq!(status, 200);
        let issued = pem::parse(&pem).unwrap();
        let written = std::fs::read(&out).unwrap();
        let written = pem::parse_many(&written).unwrap();
        assert!(written.iter().any(|p| p.contents() == issued.contents()));
        let (_, history) = api
            .get(&format!("/api/v1/devices/{device}/certificates"))
            .await;
        assert_eq!(history[0]["state"], "installed");
        assert_eq!(history[0]["serial"], serial.as_str());

        let (_, events) = api.get(&format!("/api/v1/events?device={device}")).await;
        let kinds: Vec<&str> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        for kind in [
            "device_created",
            "operation_scheduled",
            "operation_claimed",
            "certificate_issued",
            "certificate_installed",
            "operation_succeeded",
        ] {
            assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
        }
        assert!(
            !events.to_string().contains(&secret),
            "audit never holds the string"
        );

        // The CLI tells the same story.
        let (code, text, err) = cli(&server, &["op", "show", device]);
        assert_eq!(code, 0, "{err}");
        assert!(
            text.contains("Upgrade Success") && text.contains(&serial),
            "{text}"
        );
        let (code, trail, err) = cli(&server, &["op", "events", device]);
        assert_eq!(code, 0, "{err}");
        let cli_kinds: Vec<&str> = trail
            .lines()
            .map(|l| l.split_whitespace().nth(2).unwrap_or(""))
            .collect();
        assert_eq!(cli_kinds, kinds, "{trail}");
        assert!(trail.lines().all(|l| l.contains(device)), "{trail}");
        assert!(!trail.contains(&secret), "audit never holds the string");
        let (code, trail, _) = cli(&server, &["op", "events", device, "--json"]);
        assert_eq!(code, 0);
        let first: Value = serde_json::from_str(trail.lines().next().unwrap()).unwrap();
        assert_eq!(first, events["events"][0]);
        let (status, headers, report) = api
            .raw(Some(&api.token), Method::GET, "/api/v1/report", "", vec![])
            .await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
        let report = String::from_utf8(report).unwrap();
        assert_eq!(
            report.lines().next().unwrap(),
            "device,lsc_status,lsc_serial,lsc_not_after,operation,status,status_code,cause,\
             completes_by,last_attempt_at,last_attempt_source,last_attempt_outcome"
        );
        let (code, cli_report, _) = cli(&server, &["report"]);
        assert_eq!(code, 0);
        assert_eq!(cli_report, report);
        let line = report.lines().find(|l| l.starts_with(device)).unwrap();
        assert!(
            line.contains(&serial) && line.contains("Upgrade Success"),
            "{line}"
        );

        // From here on the audit trail only grows: events since a moment are the later ones.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mark = chrono::Utc::now();
        let since = mark.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        tokio::time::sleep(Duration::from_millis(20)).await;

        // Cancel through the CLI: the status reads None again, cancelling twice is a 404.
        let (code, _, err) = cli(
            &server,
            &[
                "op",
                "schedule",
                device,
                "--operation",
                "delete",
                "--auth-mode",
                "lsc",
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(cli(&server, &["op", "cancel", device]).0, 0);
        let (_, shown) = api.get(&format!("/api/v1/devices/{device}")).await;
        assert_eq!(shown["status"]["text"], "None");
        assert_eq!(shown["status"]["code"], "cancelled");
        let (status, _) = api
            .call(
                Method::DELETE,
                &format!("/api/v1/devices/{device}/operation"),
                None,
            )
            .await;
        assert_eq!(status, 404);
        let (status, later) = api
            .get(&format!("/api/v1/events?device={device}&since={since}"))
            .await;
        assert_eq!(status, 200, "{later}");
        let later = later["events"].as_array().unwrap();
        let later_kinds: Vec<&str> = later.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(later_kinds, ["operation_scheduled", "operation_cancelled"]);
        for e in later {
            let at = chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap();
            assert!(at >= mark, "{e} is before {since}");
        }
        let (code, trail, err) = cli(&server, &["op", "events", device, "--since", &since]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(trail.lines().count(), 2, "{trail}");
        assert!(trail.contains("operation_cancelled"), "{trail}");
        let (code, _, err) = cli(&server, &["op", "events", device, "--since", "soon"]);
        assert_eq!(code, 2, "a bad time is a field error: {err}");
        assert!(err.contains("since"), "{err}");
        // The phone connecting now has nothing to do.
        let (code, text) = server.phone(device, &["--auth-string", "1234"]);
        assert_eq!(code, 0, "{text}");
        let (_, shown) = api.get(&format!("/api/v1/devices/{device}")).await;
        assert_eq!(shown["lsc"]["serial"], serial.as_str());
        drop(server);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deadline_expiry_and_key_generation_limits() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::create(&engine, dir.path()).await;
        let server = TestServer::start(
            dir.path(),
            &db.url,
            &[
                "--keygen-timeout",
                "1",
                "--keygen-max-attempts",
                "2",
                "--sweep-interval",
                "1",
            ],
        );
        let api = Api::new(&server.api, &admin_token(dir.path()));
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
        let late = "SEP00000000DEAD";
        let swept = "SEP00000000BEEF";
        for device in [late, swept] {
            let (status, body) = api
                .put(
                    &format!("/api/v1/devices/{device}/operation"),
                    json!({"operation": "install", "auth_mode": "null", "completes_by": soon}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
        // The sweeper marks both without any phone connecting (its logic against a clock
        // the test moves is in crates/server/tests/sweeper.rs; here, the real process)...
        let shown = wait_for(&api, swept, |v| v["status"]["code"] == "timed_out").await;
        assert_eq!(
            shown["status"]["text"],
            "Upgrade Failed: User Initiated Request Late"
        );
        // ... and a phone connecting after the deadline gets no operation.
        let (code, text) = server.phone(late, &[]);
        assert_eq!(code, 0, "{text}");
        let (_, shown) = api.get(&format!("/api/v1/devices/{late}")).await;
        assert_eq!(shown["status"]["code"], "timed_out");
        assert!(shown["lsc"].is_null());

        // Key generation: 1 s per attempt, 2 attempts.
        let slow = "SEP0000000051A0";
        let (status, _) = api
            .put(
                &format!("/api/v1/devices/{slow}/operation"),
                json!({"operation": "install", "auth_mode": "null", "key": "ec-p256"}),
            )
            .await;
        assert_eq!(status, 200);
        server.phone(slow, &["--stall-keygen"]);
        let shown = wait_for(&api, slow, |v| !v["status"]["cause"].is_null()).await;
        assert_eq!(shown["status"]["code"], "pending");
        assert_eq!(
            shown["status"]["text"],
            "Upgrade Failed: Key Generation Timeout"
        );
        assert_eq!(shown["operation"]["keygen_attempts"], 1);
        server.phone(slow, &["--stall-keygen"]);
        let shown = wait_for(&api, slow, |v| v["status"]["code"] != "pending").await;
        assert_eq!(shown["status"]["code"], "failed");
        assert_eq!(shown["status"]["cause"], "key_generation_timeout");
        assert_eq!(
            shown["status"]["text"],
            "Upgrade Failed: Key Generation Timeout"
        );
        // A third try finds nothing to do; the phone that would now answer gets no LSC.
        let (code, text) = server.phone(slow, &[]);
        assert_eq!(code, 0, "{text}");
        let (_, shown) = api.get(&format!("/api/v1/devices/{slow}")).await;
        assert!(shown["lsc"].is_null());
        drop(server);
        db.drop_db().await;
    }
}
