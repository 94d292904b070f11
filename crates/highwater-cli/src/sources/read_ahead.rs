//! Reading a file source on its own thread, a few items ahead of extract.
//!
//! Reading, decompressing and splitting lines then overlap with extract's filtering on the
//! other core. Only for sources whose reading has no effect outside the process (files): a
//! stop (an incremental leaving its range) then costs at most the items read ahead.

use std::sync::mpsc::{sync_channel, Receiver};

/// Items the reading thread may be ahead (for JSON Lines, blocks of about 1 MiB).
const ITEMS_AHEAD: usize = 4;

/// An iterator whose items are produced by `inner` on a background thread.
pub struct ReadAhead<T> {
    items: Receiver<T>,
}

impl<T: Send + 'static> ReadAhead<T> {
    /// Starts `inner` on a new thread. The thread ends when `inner` does, or when the
    /// `ReadAhead` is dropped.
    pub fn spawn<I>(inner: I) -> Self
    where
        I: Iterator<Item = T> + Send + 'static,
    {
        let (sender, items) = sync_channel(ITEMS_AHEAD);
        std::thread::spawn(move || {
            for item in inner {
                if sender.send(item).is_err() {
                    return;
                }
            }
        });
        ReadAhead { items }
    }
}

impl<T> Iterator for ReadAhead<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        // A closed channel is the end: the thread returns only when `inner` is done.
        self.items.recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_every_item_in_order() {
        let n = ITEMS_AHEAD * 3 + 7;
        let items: Vec<usize> = ReadAhead::spawn(0..n).collect();
        assert_eq!(items, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn dropping_it_early_ends_the_reading_thread() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        struct Endless(std::sync::mpsc::Sender<()>);
        impl Iterator for Endless {
            type Item = u8;
            fn next(&mut self) -> Option<u8> {
                Some(0)
            }
        }
        impl Drop for Endless {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        let mut ahead = ReadAhead::spawn(Endless(done_tx));
        assert_eq!(ahead.next(), Some(0));
        drop(ahead);
        // The thread drops the endless reader once its next send fails.
        assert!(done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .is_ok());
    }
}
