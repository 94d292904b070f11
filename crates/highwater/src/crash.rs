//! Test hooks at named points of a run: `HIGHWATER_TEST_CRASH=<point>` aborts the process at
//! that point, as a kill would, so tests can prove that the next run finishes the work;
//! `HIGHWATER_TEST_PAUSE=<point>` stops there (saying so on stderr) until the process is
//! signalled, so tests can interrupt a run at a known stage; and [`observe_points`] lets a test
//! look at the destination from another connection while a load stands at a point inside its
//! transaction.

use std::cell::RefCell;

type Observer = Box<dyn FnMut(&str)>;

thread_local! {
    static OBSERVER: RefCell<Option<Observer>> = const { RefCell::new(None) };
}

/// Aborts the process when `HIGHWATER_TEST_CRASH` names `point`; waits forever when
/// `HIGHWATER_TEST_PAUSE` does; calls the observer of this thread, if any, with `point`.
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
    OBSERVER.with(|observer| {
        if let Some(observe) = observer.borrow_mut().as_mut() {
            observe(point);
        }
    });
}

/// Runs `f` with `observe` called at each named point this thread reaches (for tests: e.g.
/// `replace-emptied`, where a replace has emptied its tables inside the load's transaction,
/// or `scd2-retired`). The load is on the thread that calls `Pipeline::run`.
#[doc(hidden)]
pub fn observe_points<T>(observe: impl FnMut(&str) + 'static, f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            OBSERVER.with(|observer| observer.borrow_mut().take());
        }
    }
    OBSERVER.with(|observer| *observer.borrow_mut() = Some(Box::new(observe)));
    let _reset = Reset;
    f()
}
