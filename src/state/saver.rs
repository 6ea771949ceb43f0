//! Saving the state beside the download rather than in its way. After every fragment the
//! output must be fsynced and then the state replaced (an fsync, a rename and one of the
//! folder, or a conditional PUT to S3): milliseconds in which a fleet's other streams, sharing
//! the download's thread, would wait. Here a thread of the run's own does that work while the
//! download goes on. Only the newest state waiting is saved: it covers the older ones, so a
//! slow disk or store makes saves rarer, never the download slower. And a state is saved at most
//! every [`SAVE_EVERY`]: each save costs the output's fsync and the state's three filesystem
//! steps, most of a fleet's CPU when it is done per fragment, while a state a few seconds old
//! only means that after a crash the next run writes those seconds again (over the unrecorded
//! end of the `.part`, so still once).
//!
//! One rule keeps "every fragment once" across crashes: a file takes its final name only
//! after the state through its last fragment is saved ([`Barrier`]); a state that lags behind
//! a finished file would make the next run write that file's last fragments again. A save that
//! fails is returned by the next call, and the run stops with it.

use std::fs::File;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{State, Store};
use crate::error::Error;

/// A run's first state is saved at once; the next ones at most this often, unless a file is
/// about to be finished or the run to end (see [`Barrier`]).
pub const SAVE_EVERY: Duration = Duration::from_secs(5);

/// See the module docs.
pub struct Saver {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
}

#[derive(Default)]
struct Queue {
    /// The newest state waiting, and the output file to sync before it is saved.
    newest: Option<(Box<State>, Option<File>)>,
    /// A state is being saved.
    busy: bool,
    /// A save failed: nothing more is saved.
    stopped: bool,
    /// Its error, until a caller takes it.
    failed: Option<Error>,
    /// The run is over: the thread ends once the queue is empty.
    closing: bool,
    /// Callers waiting for the queue to empty: the newest state is saved now.
    waiting: usize,
}

impl Saver {
    /// Starts saving to `store` on a thread of its own.
    pub fn start(store: Store) -> Result<Saver, Error> {
        Saver::every(store, SAVE_EVERY)
    }

    fn every(store: Store, every: Duration) -> Result<Saver, Error> {
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("state".into())
            .stack_size(256 << 10)
            .spawn(move || work(store, &worker, every))
            .map_err(|e| Error::io("starting the state's thread", e))?;
        Ok(Saver {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues `state`, to be saved once `durable` is synced (see
    /// [`crate::writer::Writer::durable`]). The error of an earlier save, if one failed.
    pub fn save(&mut self, state: State, durable: Option<File>) -> Result<(), Error> {
        let mut queue = self.shared.lock();
        if let Some(e) = queue.failed.take() {
            return Err(e);
        }
        if !queue.stopped {
            queue.newest = Some((Box::new(state), durable));
            self.shared.changed.notify_all();
        }
        Ok(())
    }

    /// Waits until every state queued so far is saved; the error of a save that failed.
    pub fn flush(&mut self) -> Result<(), Error> {
        let mut queue = self.shared.wait_idle();
        match queue.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// What a writer waits on before a file takes its final name.
    pub fn barrier(&self) -> Barrier {
        Barrier(Arc::clone(&self.shared))
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits until the states queued so far are saved; an error when one failed (the saver keeps
/// that error for the run, which stops with it).
#[derive(Clone)]
pub struct Barrier(Arc<Shared>);

impl Barrier {
    pub fn wait(&self) -> io::Result<()> {
        match self.0.wait_idle().stopped {
            true => Err(io::Error::other(
                "the state could not be saved, so no file is finished",
            )),
            false => Ok(()),
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().expect("not poisoned")
    }

    fn wait_idle(&self) -> std::sync::MutexGuard<'_, Queue> {
        let mut queue = self.lock();
        queue.waiting += 1;
        self.changed.notify_all();
        let mut queue = self
            .changed
            .wait_while(queue, |q| !q.stopped && (q.busy || q.newest.is_some()))
            .expect("not poisoned");
        queue.waiting -= 1;
        queue
    }
}

fn work(mut store: Store, shared: &Shared, every: Duration) {
    let mut saved_at: Option<Instant> = None;
    loop {
        let (state, durable) = {
            let mut queue = shared.lock();
            loop {
                let due = saved_at.map_or(Duration::ZERO, |t| every.saturating_sub(t.elapsed()));
                match &queue.newest {
                    None if queue.closing => return,
                    Some(_) if due.is_zero() || queue.waiting > 0 || queue.closing => break,
                    // Nothing to save: sleep until something is queued.
                    None => queue = shared.changed.wait(queue).expect("not poisoned"),
                    Some(_) => {
                        queue = shared
                            .changed
                            .wait_timeout(queue, due)
                            .expect("not poisoned")
                            .0
                    }
                }
            }
            queue.busy = true;
            saved_at = Some(Instant::now());
            queue.newest.take().expect("checked")
        };
        let saved = store.save(&state, durable);
        let mut queue = shared.lock();
        queue.busy = false;
        if let Err(e) = saved {
            queue.stopped = true;
            queue.newest = None;
            queue.failed = Some(e);
        }
        shared.changed.notify_all();
        if queue.stopped {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::Saved;

    fn state(n: u64) -> State {
        let saved = Saved {
            fragment_number: n.to_string(),
            server_timestamp_ms: n as i64,
            producer_timestamp_ms: n as i64,
            continuation_token: None,
        };
        State {
            version: super::super::VERSION,
            stream: "cam".into(),
            region: Some("us-west-2".into()),
            last: saved,
            file: None,
        }
    }

    fn open(path: &std::path::Path) -> Store {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(Store::open(path, std::time::Duration::ZERO))
            .unwrap()
            .0
    }

    #[test]
    fn the_newest_state_is_saved_by_the_flush_and_the_barrier() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let mut saver = Saver::start(open(&path)).unwrap();
        let output = File::create(dir.path().join("out.part")).unwrap();
        for n in 1..=50 {
            saver
                .save(state(n), Some(output.try_clone().unwrap()))
                .unwrap();
        }
        saver.barrier().wait().unwrap();
        assert_eq!(super::super::load(&path).unwrap(), Some(state(50)));
        saver.save(state(51), None).unwrap();
        saver.flush().unwrap();
        assert_eq!(super::super::load(&path).unwrap(), Some(state(51)));
    }

    #[test]
    fn the_first_state_is_saved_at_once_and_the_next_when_due_or_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let mut saver = Saver::every(open(&path), Duration::from_secs(3600)).unwrap();
        saver.save(state(1), None).unwrap();
        // The first is due at once: the thread saves it with no one waiting.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !path.exists() {
            assert!(Instant::now() < deadline, "the first state was never saved");
            std::thread::sleep(Duration::from_millis(1));
        }
        saver.save(state(2), None).unwrap();
        saver.save(state(3), None).unwrap();
        let queued = saver
            .shared
            .lock()
            .newest
            .as_ref()
            .map(|(s, _)| s.last.clone());
        assert_eq!(queued, Some(state(3).last), "not due for an hour: waiting");
        assert_eq!(super::super::load(&path).unwrap(), Some(state(1)));
        saver.barrier().wait().unwrap();
        assert_eq!(super::super::load(&path).unwrap(), Some(state(3)));
    }

    #[test]
    fn a_failed_save_is_returned_once_and_nothing_more_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone").join("s.json");
        std::fs::create_dir(dir.path().join("gone")).unwrap();
        let mut saver = Saver::start(open(&path)).unwrap();
        // The folder the state is replaced in disappears: the save fails.
        std::fs::remove_dir_all(dir.path().join("gone")).unwrap();
        saver.save(state(1), None).unwrap();
        assert!(saver.barrier().wait().is_err(), "no file is finished now");
        let e = saver.flush().unwrap_err();
        assert!(e.to_string().contains("saving the state to"), "{e}");
        std::fs::create_dir(dir.path().join("gone")).unwrap();
        saver.save(state(2), None).unwrap();
        saver.flush().unwrap();
        assert!(!path.exists(), "nothing is saved after a failure");
    }
}
