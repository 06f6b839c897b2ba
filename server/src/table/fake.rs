//! A recording outlet for the table's tests: a bounded queue that can be full or closed.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;

use super::{Outlet, Refused};

/// One fake session's queue.
#[derive(Clone)]
pub(super) struct Fake {
    /// Which session (the tests' own numbering).
    pub(super) n: usize,
    /// The queue, shared with the test.
    queue: Rc<RefCell<Queue>>,
}

/// What a fake queue holds.
struct Queue {
    /// Frames offered and not taken yet.
    frames: VecDeque<Bytes>,
    /// How many it takes.
    capacity: usize,
    /// Whether the session is gone.
    closed: bool,
}

impl Fake {
    /// Session `n` with room for `capacity` frames.
    pub(super) fn new(n: usize, capacity: usize) -> Fake {
        Fake {
            n,
            queue: Rc::new(RefCell::new(Queue {
                frames: VecDeque::new(),
                capacity,
                closed: false,
            })),
        }
    }

    /// Takes every queued frame, as the session's writer would.
    pub(super) fn drain(&self) -> Vec<Bytes> {
        self.queue.borrow_mut().frames.drain(..).collect()
    }

    /// How many frames wait.
    pub(super) fn len(&self) -> usize {
        self.queue.borrow().frames.len()
    }

    /// The session is gone: offers are refused as closed from now on.
    pub(super) fn close(&self) {
        self.queue.borrow_mut().closed = true;
    }
}

impl Outlet for Fake {
    fn offer(&self, frame: Bytes) -> Result<(), Refused> {
        let mut q = self.queue.borrow_mut();
        if q.closed {
            Err(Refused::Closed)
        } else if q.frames.len() >= q.capacity {
            Err(Refused::Full)
        } else {
            q.frames.push_back(frame);
            Ok(())
        }
    }
}

impl std::fmt::Debug for Fake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "session {}", self.n)
    }
}
