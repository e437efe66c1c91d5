//! Listings, bulk scheduling (CSV, JSON, by query) and its limits.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn listing_filters_cursor_and_bulk_by_query() {
    for engine in engines() {
        let (_dir, db, server, api) = started(&engine, &[]).await;
        let rows: Vec<Value> = (0..25)
            .map(|i| {
                json!({"device": format!("SEP0000000000{i:02X}"), "operation": "install",
                       "auth_mode": "null", "key": "ec-p256"})
            })
            .chain((0..5).map(|i| {
                json!({"device": format!("CSFUSER{i}"), "operation": "troubleshoot",
                       "auth_mode": "null"})
            }))
            .collect();
        let (status, body) = bulk_rows(&api, rows).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["scheduled"], 30);
        // Two phones enroll.
        for device in ["SEP000000000000", "SEP000000000001"] {
            let (code, text) = server.phone(device, &[]);
            assert_eq!(code, 0, "{text}");
        }

        let count = |query: &'static str| {
            let api = &api;
            async move {
                let (status, body) = api
                    .get(&format!("/api/v1/devices?limit=1000&{query}"))
                    .await;
                assert_eq!(status, 200, "{query}: {body}");
                body["devices"].as_array().unwrap().len()
            }
        };
        assert_eq!(count("").await, 30);
        assert_eq!(count("status=pending").await, 28);
        assert_eq!(count("status=success").await, 2);
        assert_eq!(count("lsc=present").await, 2);
        assert_eq!(count("lsc=absent").await, 28);
        assert_eq!(count("operation=troubleshoot").await, 5);
        assert_eq!(count("prefix=CSF").await, 5);
        assert_eq!(count("prefix=sep00000000001").await, 9);
        assert_eq!(count("lsc_expires_before=2099-01-01").await, 2);
        assert_eq!(count("lsc_expires_before=2000-01-01").await, 0);
        assert_eq!(count("status=none").await, 0);

        // Pages of 7 cover everything once, in name order.
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/devices?limit=7&cursor={c}"),
                None => "/api/v1/devices?limit=7".to_string(),
            };
            let (_, page) = api.get(&path).await;
            for d in page["devices"].as_array().unwrap() {
                names.push(d["name"].as_str().unwrap().to_string());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names.len(), 30);
        assert_eq!(names, sorted);

        // Bulk by query: renew every device that has an LSC (dry run first).
        let request = json!({"query": {"lsc": "present"}, "operation": "install",
                             "auth_mode": "lsc", "key": "ec-p384", "dry_run": true});
        let (status, body) = api
            .call(
                Method::POST,
                "/api/v1/operations/bulk",
                Some(request.clone()),
            )
            .await;
        assert_eq!(
            (status, body["rows"].as_u64(), body["scheduled"].as_u64()),
            (200, Some(2), Some(0))
        );
        assert_eq!(count("status=pending").await, 28);
        let mut apply = request;
        apply["dry_run"] = json!(false);
        let (status, body) = api
            .call(Method::POST, "/api/v1/operations/bulk", Some(apply))
            .await;
        assert_eq!(
            (status, body["scheduled"].as_u64()),
            (200, Some(2)),
            "{body}"
        );
        assert_eq!(count("status=pending").await, 30);
        let (code, listed, _) = cli(&server, &["op", "list", "--operation", "troubleshoot"]);
        assert_eq!(code, 0);
        assert_eq!(listed.lines().count(), 5, "{listed}");
        drop(server);
        db.drop_db().await;
    }
}

fn generated_csv(n: usize) -> String {
    let mut csv = String::from("device,operation,auth_mode,auth_string,key,completes_by\n");
    for i in 0..n {
        csv.push_str(&format!(
            "SEP{:012X},install,string,{},rsa-2048,\n",
            0x10_0000_0000u64 + i as u64,
            10_000_000 + i
        ));
    }
    csv
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_import_40000_rows_and_a_file_with_bad_rows() {
    for engine in engines() {
        let (dir, db, server, api) = started(&engine, &[]).await;

        let (status, body) = api.csv("", generated_csv(40_000)).await;
        assert_eq!(status, 200, "{}", body["errors"]);
        assert_eq!(body["scheduled"], 40_000);
        let store = server.store().await;
        let pending = store
            .list_devices(&capf_store::DeviceFilter {
                status: Some(capf_store::StatusFilter::Is(
                    capf_model::operation::OperationStatus::Pending,
                )),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(pending.len(), 40_000);

        // A file with bad rows: each reported with its line, nothing applied.
        let bad = "device,operation,auth_mode,auth_string,key,completes_by\n\
                   SEP0000000000A1,install,string,1234,,\n\
                   SEP0000000000A2,install,string,12x4,,\n\
                   SEP0000000000A3,upgrade,null,,rsa-9999,\n\
                   SEP0000000000A4,install,null,,,2001-01-01T00:00:00Z\n\
                   SEP0000000000A1,delete,null,,,\n\
                   NOT A NAME,install,null,,,\n";
        let (status, body) = api.csv("", bad.to_string()).await;
        assert_eq!(status, 422);
        let lines: Vec<(u64, &str)> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["line"].as_u64().unwrap(), e["field"].as_str().unwrap()))
            .collect();
        assert_eq!(
            lines,
            [
                (3, "auth_string"),
                (4, "key"),
                (5, "completes_by"),
                (6, "device"),
                (7, "device")
            ]
        );
        assert_eq!(body["scheduled"], 0);
        let name = capf_model::device::DeviceName::from_admin("SEP0000000000A1").unwrap();
        assert!(
            store.device(&name).await.unwrap().is_none(),
            "nothing applied"
        );
        // The CLI reports the same lines and exits 2; a dry run of a good file changes nothing.
        let file = dir.path().join("bad.csv");
        std::fs::write(&file, bad).unwrap();
        let (code, _, err) = cli(
            &server,
            &["op", "import", file.to_str().unwrap(), "--apply"],
        );
        assert_eq!(code, 2, "{err}");
        for line in ["line 3: auth_string", "line 4: key", "line 7: device"] {
            assert!(err.contains(line), "{line} missing: {err}");
        }
        let good = dir.path().join("good.csv");
        std::fs::write(
            &good,
            "device,operation,auth_mode\nSEP0000000000B1,install,string\nSEP0000000000B2,delete,null\n",
        )
        .unwrap();
        let (code, _, err) = cli(
            &server,
            &[
                "op",
                "import",
                good.to_str().unwrap(),
                "--generate-auth-strings",
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("dry run"), "{err}");
        let b1 = capf_model::device::DeviceName::from_admin("SEP0000000000B1").unwrap();
        assert!(store.device(&b1).await.unwrap().is_none());
        let (code, out, err) = cli(
            &server,
            &[
                "op",
                "import",
                good.to_str().unwrap(),
                "--generate-auth-strings",
                "--apply",
            ],
        );
        assert_eq!(code, 0, "{err}");
        let generated: Vec<&str> = out.lines().skip(1).collect();
        assert_eq!(generated.len(), 1, "{out}");
        let (device, secret) = generated[0].split_once(',').unwrap();
        assert_eq!(device, "SEP0000000000B1");
        let op = store
            .pending_operation(&b1, chrono::Utc::now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(op.auth_string.unwrap().0, secret);

        // More rows than the 10,000 the CLI once sent per request, every one generated: one
        // import never hands two devices the same string.
        let rows = 12_000;
        let mut csv = String::from("device,operation,auth_mode\n");
        for i in 0..rows {
            csv.push_str(&format!(
                "SEP{:012X},install,string\n",
                0x20_0000_0000u64 + i
            ));
        }
        let big = dir.path().join("generate.csv");
        std::fs::write(&big, csv).unwrap();
        let (code, out, err) = cli(
            &server,
            &[
                "op",
                "import",
                big.to_str().unwrap(),
                "--generate-auth-strings",
                "--apply",
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains(&format!("{rows} operations scheduled")),
            "{err}"
        );
        let generated: Vec<(&str, &str)> = out
            .lines()
            .skip(1)
            .map(|l| l.split_once(',').unwrap())
            .collect();
        assert_eq!(generated.len(), rows as usize);
        let strings: std::collections::HashSet<&str> = generated.iter().map(|g| g.1).collect();
        assert_eq!(strings.len(), generated.len(), "a generated string repeats");
        assert!(strings.iter().all(|s| check_auth_string(s).is_none()));
        let (last_device, last_secret) = generated[generated.len() - 1];
        let last = capf_model::device::DeviceName::from_admin(last_device).unwrap();
        let op = store
            .pending_operation(&last, chrono::Utc::now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(op.auth_string.unwrap().0, last_secret);
        drop(server);
        db.drop_db().await;
    }
}

/// The row limit is a clear 422 that applies nothing; a JSON body of a few hundred rows
/// is applied with a distinct generated string for each.
#[tokio::test(flavor = "multi_thread")]
async fn bulk_row_limit_and_json_rows() {
    for engine in engines() {
        let (_dir, db, server, api) = started(&engine, &[]).await;
        let over = capf_server::api::bulk::MAX_ROWS + 1;
        let mut csv = String::from("device,operation,auth_mode\n");
        for i in 0..over {
            csv.push_str(&format!("SEP{:012X},install,null\n", i));
        }
        let (status, body) = api.csv("", csv).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(
            messages(&body),
            [(
                "rows".to_string(),
                "at most 100000 rows per request".to_string()
            )]
        );
        assert_eq!(body["scheduled"], 0);
        let rows: Vec<Value> = (0..over)
            .map(|i| {
                json!({"device": format!("SEP{i:012X}"), "operation": "install",
                            "auth_mode": "null"})
            })
            .collect();
        let (status, body) = bulk_rows(&api, rows).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(messages(&body)[0].0, "rows");
        // A body over the size limit is refused before it is read.
        let (status, _, answer) = api
            .raw(
                Some(&api.token),
                Method::POST,
                "/api/v1/operations/bulk",
                "text/csv",
                vec![b'x'; capf_server::api::bulk::MAX_BODY + 1],
            )
            .await;
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(status, 413, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("32 MiB"),
            "{answer}"
        );
        let (_, listed) = api.get("/api/v1/devices").await;
        assert_eq!(listed["devices"], json!([]), "nothing applied");

        let rows: Vec<Value> = (0..300)
            .map(|i| {
                json!({"device": format!("SEP0000000A{i:04X}"), "operation": "install",
                            "auth_mode": "string", "key": "ec-p256"})
            })
            .collect();
        let (status, body) = api
            .call(
                Method::POST,
                "/api/v1/operations/bulk",
                Some(json!({"rows": rows, "generate_auth_strings": true})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["rows"].as_u64(), body["scheduled"].as_u64()),
            (Some(300), Some(300))
        );
        let strings: std::collections::HashSet<&str> = body["auth_strings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["auth_string"].as_str().unwrap())
            .collect();
        assert_eq!(strings.len(), 300);
        let (_, listed) = api
            .get("/api/v1/devices?status=pending&operation=install&limit=1000")
            .await;
        assert_eq!(listed["devices"].as_array().unwrap().len(), 300);
        let (_, shown) = api.get("/api/v1/devices/SEP0000000A012B").await;
        assert_eq!(shown["operation"]["key"], "ec-p256");
        let secret = shown["operation"]["auth_string"].as_str().unwrap();
        assert!(strings.contains(secret));
        drop(server);
        db.drop_db().await;
    }
}

/// Findings 2, 11 and 12: a NUL (or any character no device name has) in the listing cursor is
/// a 422 on both engines, not a database error; report cells a spreadsheet would take for a
/// formula (a device named `-2-3`) are written as text.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_names_and_hostile_cursors_are_refused_and_report_cells_are_not_formulas() {
    for engine in engines() {
        let (_dir, _db, _server, api) = started(&engine, &[]).await;
        for cursor in ["SEP%00", "%00", "a%27b", "x%0Ay"] {
            let (status, body) = api.get(&format!("/api/v1/devices?cursor={cursor}")).await;
            assert_eq!(status, 422, "{}: cursor {cursor}: {body}", engine.name());
            assert_eq!(body["fields"][0]["field"], "cursor", "{body}");
            let (status, _) = api.get(&format!("/api/v1/report?cursor={cursor}")).await;
            assert_eq!(status, 200, "the report ignores the cursor");
        }

        // Finding 2: a name given twice (query, JSON, CSV header) is refused, never read as
        // whichever came last; nothing is scheduled.
        let csv = b"device,operation,auth_mode,name\nSEP0000000000D1,install,null,jsmith\n";
        for (path, content_type, body) in [
            (
                "/api/v1/operations/bulk?dry_run=true&dry_run=false",
                "text/csv",
                &csv[..],
            ),
            ("/api/v1/operations/bulk", "text/csv", &csv[..]),
            (
                "/api/v1/operations/bulk",
                "application/json",
                br#"{"dry_run": true, "dry_run": false, "rows": []}"#,
            ),
        ] {
            let (status, _, answer) = api
                .raw(
                    Some(&api.token),
                    Method::POST,
                    path,
                    content_type,
                    body.to_vec(),
                )
                .await;
            assert_eq!(status, 422, "{path}: {}", String::from_utf8_lossy(&answer));
        }
        let (status, _) = api.get("/api/v1/devices?limit=1&limit=2").await;
        assert_eq!(status, 422);
        let (_, listed) = api.get("/api/v1/devices").await;
        assert_eq!(listed["devices"].as_array().unwrap().len(), 0, "{listed}");

        let rows =
            vec![json!({"device": "-2-3", "operation": "troubleshoot", "auth_mode": "null"})];
        let (status, body) = bulk_rows(&api, rows).await;
        assert_eq!(status, 200, "{body}");
        let (status, _, report) = api
            .raw(Some(&api.token), Method::GET, "/api/v1/report", "", vec![])
            .await;
        assert_eq!(status, 200);
        let report = String::from_utf8(report).unwrap();
        assert!(report.lines().any(|l| l.starts_with("'-2-3,")), "{report}");
    }
}
