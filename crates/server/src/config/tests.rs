use std::path::PathBuf;
use std::time::Duration;

use super::*;
use capf_store::LockoutPolicy;

#[test]
fn defaults() {
    let s = Settings::resolve(&ServeArgs::default()).unwrap();
    assert_eq!(s.listen, "0.0.0.0:3804".parse().unwrap());
    assert_eq!(s.data_dir, PathBuf::from("./data"));
    assert_eq!(s.certs_dir, PathBuf::from("./certs"));
    assert_eq!(s.database_url.expose(), "sqlite://./data/capf.db");
    assert_eq!(s.live.lsc_validity_days, 1825);
    assert_eq!(s.live.lockout(), LockoutPolicy::default());
    assert_eq!(s.claim_lease, Duration::from_secs(90));
}

#[test]
fn claim_lease_has_a_floor() {
    let lease = |secs| {
        Settings::resolve(&ServeArgs {
            claim_lease: Some(secs),
            ..Default::default()
        })
        .map(|s| s.claim_lease)
    };
    assert_eq!(lease(3).unwrap(), Duration::from_secs(3));
    assert!(matches!(
        lease(2),
        Err(ConfigError::Invalid {
            name: "claim_lease",
            ..
        })
    ));
}

#[test]
fn flags_win_over_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capf.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:4000\"\ndata_dir = \"/var/lib/capf\"\nlsc_validity_days = 365\n",
    )
    .unwrap();
    let args = ServeArgs {
        config: Some(path),
        listen: Some("127.0.0.1:5000".parse().unwrap()),
        ..Default::default()
    };
    let s = Settings::resolve(&args).unwrap();
    assert_eq!(s.listen, "127.0.0.1:5000".parse().unwrap());
    assert_eq!(s.data_dir, PathBuf::from("/var/lib/capf"));
    assert_eq!(s.database_url.expose(), "sqlite:///var/lib/capf/capf.db");
    assert_eq!(s.live.lsc_validity_days, 365);
}

#[test]
fn api_tls_from_flag_or_file() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let parse = |args: &[&str]| Cli::try_parse_from(args).unwrap().serve;
    assert!(!Settings::resolve(&parse(&["capf"])).unwrap().api_tls);
    assert!(
        Settings::resolve(&parse(&["capf", "--api-tls"]))
            .unwrap()
            .api_tls
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capf.toml");
    std::fs::write(&path, "api_tls = true\n").unwrap();
    let from_file = ServeArgs {
        config: Some(path),
        ..Default::default()
    };
    let a = Settings::resolve(&from_file).unwrap();
    assert!(a.api_tls);
    let off = ServeArgs {
        api_tls: Some(false),
        ..from_file
    };
    let b = Settings::resolve(&off).unwrap();
    assert!(!b.api_tls, "the flag wins over the file");
    assert_eq!(a.needing_restart(&b), ["api_tls"]);
}

#[test]
fn legacy_tls_settings() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.serve);
    assert_eq!(parse(&["capf"]).unwrap().legacy_tls, None);
    assert_eq!(
        parse(&["capf", "--legacy-tls"]).unwrap().legacy_tls,
        Some(true)
    );
    assert_eq!(
        parse(&["capf", "--legacy-tls=false"]).unwrap().legacy_tls,
        Some(false)
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capf.toml");
    std::fs::write(
        &path,
        "legacy_tls = true\nlegacy_tls_listen = \"127.0.0.1:3806\"\n",
    )
    .unwrap();
    let from_file = ServeArgs {
        config: Some(path),
        ..Default::default()
    };
    let on_listen_off = ServeArgs {
        legacy_tls: Some(false),
        ..from_file.clone()
    };
    let same_port = ServeArgs {
        listen: Some("127.0.0.1:3806".parse().unwrap()),
        ..from_file.clone()
    };
    assert!(!Settings::resolve(&ServeArgs::default())
        .unwrap()
        .legacy()
        .enabled());
    if cfg!(feature = "legacy-tls") {
        let s = Settings::resolve(&from_file).unwrap();
        assert_eq!(
            s.legacy(),
            LegacyTls {
                on_listen: true,
                listen: Some("127.0.0.1:3806".parse().unwrap())
            }
        );
        // The flag wins over the file, as every other setting.
        assert!(
            !Settings::resolve(&on_listen_off)
                .unwrap()
                .legacy()
                .on_listen
        );
        assert!(Settings::resolve(&same_port).is_err());
    } else {
        // Asked for but not built in: refused, never silently ignored.
        assert!(matches!(
            Settings::resolve(&from_file),
            Err(ConfigError::Invalid {
                name: "legacy_tls",
                ..
            })
        ));
    }
}

#[test]
fn bad_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capf.toml");
    std::fs::write(&path, "no_such_setting = 1\n").unwrap();
    let args = ServeArgs {
        config: Some(path),
        ..Default::default()
    };
    assert!(matches!(
        Settings::resolve(&args),
        Err(ConfigError::Parse { .. })
    ));
    let args = ServeArgs {
        lsc_validity_days: Some(1826),
        ..Default::default()
    };
    assert!(Settings::resolve(&args).is_err());
    let args = ServeArgs {
        database_url: Some("mysql://x".into()),
        ..Default::default()
    };
    assert!(Settings::resolve(&args).is_err());
}

/// Finding: zero silently meant one (`lockout_failures: 3 -> 1` on SIGHUP). Every cap, rate
/// and count is refused at zero, naming the setting.
#[test]
fn zero_is_refused_for_caps_rates_and_counts() {
    for name in [
        "max_sessions",
        "conn_rate",
        "conn_burst",
        "max_sessions_per_address",
        "lockout_failures",
        "api_max_connections",
        "metrics_max_connections",
        "http_header_timeout",
        "http_stall_timeout",
    ] {
        let given: ServeArgs = toml::from_str(&format!("{name} = 0\n")).unwrap();
        match Settings::resolve(&given) {
            Err(ConfigError::Invalid { name: refused, .. }) => assert_eq!(refused, name),
            other => panic!("{name} = 0: {other:?}"),
        }
    }
}

#[test]
fn log_filter_is_checked() {
    let filter = |f: &str| {
        Settings::resolve(&ServeArgs {
            log_filter: Some(f.into()),
            ..Default::default()
        })
        .map(|s| s.live.log_filter)
    };
    assert_eq!(filter("").unwrap(), "info");
    assert_eq!(
        filter("warn,capf::server=debug").unwrap(),
        "warn,capf::server=debug"
    );
    assert!(matches!(
        filter("capf=loud"),
        Err(ConfigError::Invalid {
            name: "log_filter",
            ..
        })
    ));
}

#[test]
fn reload_names_what_changed_and_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capf.toml");
    let args = ServeArgs {
        config: Some(path.clone()),
        listen: Some("127.0.0.1:5000".parse().unwrap()),
        ..Default::default()
    };
    std::fs::write(&path, "lockout_failures = 10\n").unwrap();
    let before = Settings::resolve(&args).unwrap();
    std::fs::write(
        &path,
        "lockout_failures = 2\nconn_rate = 7\nlisten = \"127.0.0.1:6000\"\n\
         database_url = \"postgres://capf:secret@db/capf\"\napi_listen = \"127.0.0.1:7000\"\n",
    )
    .unwrap();
    let after = Settings::resolve(&args).unwrap();
    let changes: Vec<String> = before
        .live
        .changes(&after.live)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(changes, ["conn_rate: 50 -> 7", "lockout_failures: 10 -> 2"]);
    // The flag wins over the file on reload too: listen did not change.
    assert_eq!(
        before.needing_restart(&after),
        ["api_listen", "database_url"]
    );
    assert!(before.live.changes(&before.live).is_empty());
    assert!(before.needing_restart(&before).is_empty());
}

#[test]
fn debug_of_the_arguments_hides_the_database_password() {
    let url = "postgres://capf:s3cretPW@db/capf?sslpassword=k3yPW&sslmode=require";
    let args = ServeArgs {
        database_url: Some(url.into()),
        ..Default::default()
    };
    let shown = format!("{args:?}");
    assert!(
        !shown.contains("s3cretPW") && !shown.contains("k3yPW"),
        "{shown}"
    );
    assert!(shown.contains("db/capf"), "{shown}");
    let settings = Settings::resolve(&args).unwrap();
    assert_eq!(settings.database_url.expose(), url);
    let shown = format!("{settings:?}");
    assert!(
        !shown.contains("s3cretPW") && !shown.contains("k3yPW"),
        "{shown}"
    );

    let file: ServeArgs = toml::from_str(&format!("database_url = {url:?}\n")).unwrap();
    let shown = format!("{file:?}");
    assert!(
        !shown.contains("s3cretPW") && !shown.contains("k3yPW"),
        "{shown}"
    );
    assert_eq!(file.database_url.map(|u| u.0).as_deref(), Some(url));
}

#[test]
fn a_broken_config_file_is_not_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capf.toml");
    std::fs::write(
        &path,
        "lockout_failures = 2\ndatabase_url = \"postgres://capf:s3cretPW@db/capf\n",
    )
    .unwrap();
    let args = ServeArgs {
        config: Some(path),
        ..Default::default()
    };
    let shown = match Settings::resolve(&args) {
        Err(e @ ConfigError::Parse { .. }) => e.to_string(),
        other => panic!("expected a parse error, got {other:?}"),
    };
    assert!(!shown.contains("s3cretPW"), "{shown}");
    assert!(shown.contains("line 2"), "{shown}");
}

#[test]
fn help_does_not_print_the_database_url_from_the_environment() {
    use clap::CommandFactory;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let command = Cli::command();
    let arg = command
        .get_arguments()
        .find(|a| a.get_id() == "database_url")
        .expect("the --database-url argument");
    // The rendered help with the variable set: tests/secrets.rs, in a process of its own.
    assert!(arg.is_hide_env_values_set());
}

#[test]
fn live_config_swaps_whole() {
    let s = Settings::resolve(&ServeArgs::default()).unwrap();
    let live = LiveConfig::new(s.live.clone());
    let held = live.current();
    let mut next = s.live.clone();
    next.lockout_failures = 3;
    let old = live.replace(next);
    assert_eq!(old.lockout().max_failures, 10);
    // A reader keeps what it took.
    assert_eq!(held.lockout().max_failures, 10);
    assert_eq!(live.current().lockout().max_failures, 3);
}

#[test]
fn every_setting_is_in_exactly_one_reload_list() {
    for setting in SETTINGS {
        let live = LIVE_SETTINGS.contains(&setting.name);
        let restart = RESTART_SETTINGS.contains(&setting.name);
        assert_ne!(
            live, restart,
            "{} in both lists or in neither",
            setting.name
        );
        assert_eq!(live, setting.reload == Reload::Live, "{}", setting.name);
    }
    assert_eq!(SETTINGS.len(), LIVE_SETTINGS.len() + RESTART_SETTINGS.len());

    // The flags are generated from the same declaration: one per setting, and --config.
    use clap::CommandFactory;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let command = Cli::command();
    let mut flags: Vec<&str> = command
        .get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| !["config", "help"].contains(id))
        .collect();
    let mut declared: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
    flags.sort_unstable();
    declared.sort_unstable();
    assert_eq!(flags, declared);
}

/// Values under which every setting resolves; the pairs are given whole, so that one half
/// of a pair can change alone, and the database URL is given so that it does not follow
/// `data_dir`.
const BASE_FILE: &[(&str, &str)] = &[
    ("api_cert", "\"/etc/capf/api.pem\""),
    ("api_key", "\"/etc/capf/api.key\""),
    ("issuer_cert", "\"/etc/capf/issuer.pem\""),
    ("issuer_key", "\"/etc/capf/issuer.key\""),
    ("database_url", "\"sqlite:///var/lib/capf/capf.db\""),
    ("node_id", "\"node-a\""),
];

/// For each setting, a value, as the config file writes it, that differs from its value
/// under [`BASE_FILE`].
const OTHER_VALUES: &[(&str, &str)] = &[
    ("listen", "\"127.0.0.1:4000\""),
    ("legacy_tls", "true"),
    ("legacy_tls_listen", "\"127.0.0.1:4001\""),
    ("api_listen", "\"127.0.0.1:4002\""),
    ("metrics_listen", "\"127.0.0.1:4003\""),
    ("api_max_connections", "255"),
    ("metrics_max_connections", "15"),
    ("http_header_timeout", "11"),
    ("http_stall_timeout", "29"),
    ("api_tls", "true"),
    ("api_cert", "\"/etc/capf/api-2.pem\""),
    ("api_key", "\"/etc/capf/api-2.key\""),
    ("operation_window_days", "8"),
    ("keygen_max_attempts", "4"),
    ("sweep_interval", "31"),
    ("claim_lease", "91"),
    ("data_dir", "\"/var/lib/capf-2\""),
    ("certs_dir", "\"/etc/capf-2\""),
    ("database_url", "\"postgres://capf@db/capf\""),
    ("capf_key", "\"ec-p256\""),
    ("capf_validity_days", "365"),
    ("subject_o", "\"Example\""),
    ("subject_ou", "\"Phones\""),
    ("subject_l", "\"Zurich\""),
    ("subject_st", "\"ZH\""),
    ("subject_c", "\"CH\""),
    ("issuer_cert", "\"/etc/capf/issuer-2.pem\""),
    ("issuer_key", "\"/etc/capf/issuer-2.key\""),
    ("lsc_validity_days", "365"),
    ("default_key", "\"ec-p256\""),
    ("handshake_timeout", "16"),
    ("frame_timeout", "31"),
    ("keygen_timeout", "1801"),
    ("session_timeout", "2401"),
    ("drain_timeout", "31"),
    ("max_sessions", "19999"),
    ("conn_rate", "49"),
    ("conn_burst", "499"),
    ("max_sessions_per_address", "1999"),
    ("mic_expiry_allowance_days", "1"),
    ("lockout_failures", "9"),
    ("lockout_seconds", "601"),
    ("node_id", "\"node-b\""),
    ("log_format", "\"json\""),
    ("log_filter", "\"debug\""),
];

/// Settings from a config file made of `entries`.
fn resolve_file(entries: &std::collections::BTreeMap<&str, &str>) -> Settings {
    let text: String = entries
        .iter()
        .map(|(name, value)| format!("{name} = {value}\n"))
        .collect();
    let given: ServeArgs = toml::from_str(&text).unwrap();
    Settings::resolve(&given).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// A setting changed alone shows up in the reload list its declaration names, and only
/// there: `changes` for a live setting, `needing_restart` for the others.
#[test]
fn each_setting_reloads_as_declared() {
    // A setting declared without a value here fails this test rather than skipping it.
    let mut valued: Vec<&str> = OTHER_VALUES.iter().map(|(name, _)| *name).collect();
    let mut declared: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
    valued.sort_unstable();
    declared.sort_unstable();
    assert_eq!(valued, declared);

    let base: std::collections::BTreeMap<&str, &str> = BASE_FILE.iter().copied().collect();
    let before = resolve_file(&base);
    for (name, value) in OTHER_VALUES {
        if name.starts_with("legacy_tls") && !cfg!(feature = "legacy-tls") {
            // Refused in such a build, so it cannot change.
            continue;
        }
        let mut changed = base.clone();
        changed.insert(name, value);
        let after = resolve_file(&changed);
        let live: Vec<&str> = before
            .live
            .changes(&after.live)
            .iter()
            .map(|c| c.name)
            .collect();
        let restart = before.needing_restart(&after);
        let declared = SETTINGS.iter().find(|s| s.name == *name).unwrap();
        match declared.reload {
            Reload::Live => {
                assert_eq!(live, [*name]);
                assert!(restart.is_empty(), "{name}: {restart:?}");
            }
            Reload::Restart => {
                assert_eq!(restart, [*name]);
                assert!(live.is_empty(), "{name}: {live:?}");
            }
        }
    }
}
