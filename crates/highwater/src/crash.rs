//! Test hooks: `HIGHWATER_TEST_CRASH=<point>` aborts the process at that point, as a kill
//! would, so tests can prove that the next run finishes the work; `HIGHWATER_TEST_PAUSE=<point>`
//! stops there (saying so on stderr) until the process is signalled, so tests can interrupt a
//! run at a known stage.

/// Aborts the process when `HIGHWATER_TEST_CRASH` names `point`; waits forever when
/// `HIGHWATER_TEST_PAUSE` does.
pub(crate) fn point(point: &str) {
    if std::env::var("HIGHWATER_TEST_CRASH").is_ok_and(|p| p == point) {
        std::process::abort();
    }
    if std::env::var("HIGHWATER_TEST_PAUSE").is_ok_and(|p| p == point) {
        eprintln!("test pause at {point}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}
