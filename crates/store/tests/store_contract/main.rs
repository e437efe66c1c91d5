//! The `Store` contract, written once and run against every back end.
//!
//! SQLite runs on a fresh file in a temporary directory. PostgreSQL runs only when
//! `CAPF_TEST_POSTGRES` names an admin URL (e.g. `postgres://postgres@127.0.0.1:5432/test`):
//! each test then creates its own database and drops it afterwards. When the variable is
//! set the server must be reachable: a connection failure fails the test. When it is not,
//! the PostgreSQL variants are ignored, with that reason (build.rs sets `cfg(capf_postgres)`
//! when the variable is set at build time), so they never count as passes; run anyway
//! (`--include-ignored`) without it, each prints one `SKIPPED (PostgreSQL)` line.

mod certificates;
mod claims;
mod fixtures;
mod harness;
mod lockout;
mod nodes;
mod operations;
mod records;

/// Every test in `store: [...]` takes a fresh store; every test in `db: [...]` takes the
/// database, to open several stores on it. Each is named `module::test`, and runs as
/// `sqlite::test` and `postgres::test`.
macro_rules! contract {
    (
        store: [$($store_mod:ident :: $store_test:ident),* $(,)?],
        db: [$($db_mod:ident :: $db_test:ident),* $(,)?] $(,)?
    ) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $store_test() {
                    let db = crate::harness::TestDb::sqlite().await;
                    crate::$store_mod::$store_test(db.open().await).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $db_test() {
                    let db = crate::harness::TestDb::sqlite().await;
                    crate::$db_mod::$db_test(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[cfg_attr(not(capf_postgres), ignore = "needs PostgreSQL: set CAPF_TEST_POSTGRES")]
                async fn $store_test() {
                    let test = stringify!($store_test);
                    let Some(db) = crate::harness::TestDb::postgres(test).await else {
                        return;
                    };
                    crate::$store_mod::$store_test(db.open().await).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[cfg_attr(not(capf_postgres), ignore = "needs PostgreSQL: set CAPF_TEST_POSTGRES")]
                async fn $db_test() {
                    let test = stringify!($db_test);
                    let Some(db) = crate::harness::TestDb::postgres(test).await else {
                        return;
                    };
                    crate::$db_mod::$db_test(&db).await;
                }
            )*
        }
    };
}

contract!(
    store: [
        operations::devices,
        operations::schedule_creates_device_and_supersedes,
        operations::no_event_contains_the_auth_string,
        operations::cancel,
        operations::pending_operation_times_out,
        operations::expire_operations,
        operations::note_attempt_failure,
        operations::schedule_many_matches_schedule,
        operations::schedule_many_is_all_or_nothing,
        claims::claim_and_release,
        claims::take_over_a_claim,
        claims::release_claims_of_a_run,
        claims::renew_claims_of_a_node,
        claims::keygen_attempts_and_failure,
        claims::claim_for_session_from_pending_to_fenced,
        claims::claim_for_session_refuses_final_operations,
        certificates::install_flow,
        certificates::record_issued_is_fenced_by_the_claim,
        certificates::confirm_install_is_fenced_by_the_claim,
        certificates::endings_are_fenced_by_the_claim,
        certificates::concurrent_writes_keep_their_own_outcomes,
        certificates::fetch_flow,
        certificates::delete_flow,
        lockout::lockout,
        lockout::reads_and_writes_of_the_enrollment_path,
        records::attempts,
        records::audit_and_events,
        records::api_tokens,
    ],
    db: [
        records::list_devices_filters_and_cursor,
        nodes::restart_keeps_everything,
        nodes::two_nodes_race,
        nodes::corrupt_rows_are_reported,
    ],
);
