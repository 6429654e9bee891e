//! The bounded queue between the feed and one session, and its overflow signal.
//!
//! The feed never waits for a session: it [`Link::push`]es a frame, and if the session's queue
//! is full the push fails at once, the link is marked overflowed, and the session is woken (a
//! `Notify` permit, which needs no queue slot). The feed stops sending to that session until it
//! subscribes again; the session drops what is queued (stale by then), tells its client, and
//! resubscribes (a book gets a fresh snapshot) or closes. So a session holds at most `capacity`
//! frames, however slow its client: memory never grows without bound.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytestring::ByteString;
use tokio::sync::{mpsc, Notify};

/// Shared by the two ends: the overflow flag and the wake-up.
#[derive(Debug, Default)]
struct Signal {
    /// Set by a push that found the queue full; cleared by the session.
    overflowed: AtomicBool,
    /// Wakes the session.
    notify: Notify,
}

/// The feed's end: cheap to clone (a sender and a reference count).
#[derive(Clone, Debug)]
pub struct Link {
    /// Frames to the session.
    tx: mpsc::Sender<ByteString>,
    /// The overflow signal.
    signal: Arc<Signal>,
}

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    /// Queued.
    Sent,
    /// The queue was full: dropped, the session is told.
    Overflow,
    /// The session is gone.
    Gone,
}

impl Link {
    /// Queues `frame` without waiting.
    pub fn push(&self, frame: ByteString) -> Push {
        match self.tx.try_send(frame) {
            Ok(()) => Push::Sent,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.signal.overflowed.store(true, Ordering::Release);
                self.signal.notify.notify_one();
                Push::Overflow
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Push::Gone,
        }
    }
}

/// The session's end.
#[derive(Debug)]
pub struct Inbox {
    /// Frames from the feed.
    rx: mpsc::Receiver<ByteString>,
    /// The overflow signal.
    signal: Arc<Signal>,
}

/// What the session finds in its inbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A frame to send.
    Frame(ByteString),
    /// The queue overflowed: drop what is queued and resync.
    Overflowed,
    /// The feed is gone.
    Closed,
}

impl Inbox {
    /// The next frame, or the news that the queue overflowed (which comes first, whatever is
    /// still queued: it is stale).
    pub async fn next(&mut self) -> Next {
        if self.take_overflow() {
            return Next::Overflowed;
        }
        tokio::select! {
            biased;
            () = self.signal.notify.notified() => {
                if self.take_overflow() { Next::Overflowed } else { Box::pin(self.next_frame()).await }
            }
            f = self.rx.recv() => f.map_or(Next::Closed, Next::Frame),
        }
    }

    async fn next_frame(&mut self) -> Next {
        self.rx.recv().await.map_or(Next::Closed, Next::Frame)
    }

    /// Clears the overflow flag, saying whether it was set.
    fn take_overflow(&self) -> bool {
        self.signal.overflowed.swap(false, Ordering::AcqRel)
    }

    /// What is there now, without waiting (`None`: nothing yet).
    pub fn try_next(&mut self) -> Option<Next> {
        if self.take_overflow() {
            return Some(Next::Overflowed);
        }
        match self.rx.try_recv() {
            Ok(f) => Some(Next::Frame(f)),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(Next::Closed),
        }
    }

    /// Drops everything queued; how many frames that was.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while self.rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }
}

/// A queue of `capacity` frames.
pub fn link(capacity: usize) -> (Link, Inbox) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let signal = Arc::new(Signal::default());
    (Link { tx, signal: signal.clone() }, Inbox { rx, signal })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> ByteString {
        ByteString::from(s.to_owned())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_drops_and_tells_the_session_first() {
        let (link, mut inbox) = link(2);
        assert_eq!(link.push(f("a")), Push::Sent);
        assert_eq!(link.push(f("b")), Push::Sent);
        assert_eq!(link.push(f("c")), Push::Overflow, "bounded: the third does not fit");
        assert_eq!(inbox.next().await, Next::Overflowed, "the overflow comes before the stale frames");
        assert_eq!(inbox.drain(), 2);
        assert_eq!(link.push(f("d")), Push::Sent);
        assert_eq!(inbox.next().await, Next::Frame(f("d")));
        drop(inbox);
        assert_eq!(link.push(f("e")), Push::Gone);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiting_session_is_woken_by_an_overflow() {
        let (link, mut inbox) = link(1);
        let waiting = tokio::spawn(async move {
            let first = inbox.next().await;
            let second = inbox.next().await;
            (first, second)
        });
        tokio::task::yield_now().await;
        assert_eq!(link.push(f("a")), Push::Sent);
        // The session may or may not have taken "a" yet; fill the queue until it overflows.
        while link.push(f("b")) != Push::Overflow {
            tokio::task::yield_now().await;
        }
        let (first, second) = waiting.await.unwrap();
        assert!(first == Next::Frame(f("a")) || first == Next::Overflowed, "{first:?}");
        assert!(first == Next::Overflowed || second == Next::Overflowed, "{second:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_closed_feed_ends_the_inbox() {
        let (link, mut inbox) = link(4);
        drop(link);
        assert_eq!(inbox.next().await, Next::Closed);
    }
}
