//! Hostile bytes, generated (issue 12, part 6): whatever a server or someone on the path sends,
//! in any phase of the connection, the engine reports it and goes on or gives up; it never
//! panics, and a broken link is never taken for a datum.

use flexim_session::Event;
use proptest::prelude::*;

use crate::kit::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Before the login (where a clear datum is expected) and after it (where only records
    /// are), arbitrary chunks are refused without a panic.
    #[test]
    fn arbitrary_bytes_never_panic_the_engine(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 1..6)) {
        let mut fresh = engine(&key(2));
        fresh.connect();
        fresh.poll_transmit();
        for c in &chunks {
            fresh.handle_bytes(c);
        }
        let _ = events(&mut fresh);

        let mut linked = logged_in(&key(2), &key(1));
        for c in &chunks {
            linked.inject(c);
        }
        let evs = events(&mut linked);
        // Nothing injected reads as a datum from the server: no message, no answer.
        prop_assert!(evs.iter().all(|e| matches!(e, Event::LinkBroken(_) | Event::Notice(_))), "{:?}", evs);
    }
}
