//! A test hook: `HIGHWATER_TEST_CRASH=<point>` aborts the process at that point, as a kill
//! would, so tests can prove that the next run finishes the work.

/// Aborts the process when `HIGHWATER_TEST_CRASH` names `point`.
pub(crate) fn point(point: &str) {
    if std::env::var("HIGHWATER_TEST_CRASH").is_ok_and(|p| p == point) {
        std::process::abort();
    }
}
