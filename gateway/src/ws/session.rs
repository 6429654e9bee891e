//! The session actor: one per WebSocket connection. It reads the client's ops (subscribe,
//! unsubscribe, ping), answers them, forwards subscriptions to the [`super::feed`], and writes
//! the frames the feed queues for it, in order. It pings the client and sends a `heartbeat`
//! every few seconds, and closes a client it has not heard from (not even a pong) for too long.
//!
//! When its queue overflows (the client reads slower than the feed writes), it drops what is
//! queued, tells the client which channels lost messages, and subscribes to them again: each
//! book starts over from a fresh snapshot. A client that overflows again and again (3 times in a
//! minute) is closed (1013, "try again later").

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use actix_ws::{CloseCode, CloseReason, Message, MessageStream};
use bytestring::ByteString;
use common::Account;
use serde_json::Value;

use super::feed::{FeedMsg, SessionId};
use super::link::{Inbox, Next};
use super::protocol::{self, Channel, Op, Refusal};
use super::Hub;

/// Overflows within [`OVERFLOW_WINDOW`] that close a session.
const MAX_OVERFLOWS: usize = 3;
/// The window [`MAX_OVERFLOWS`] counts in.
const OVERFLOW_WINDOW: Duration = Duration::from_secs(60);

/// One connection's state.
pub struct Session {
    /// Its id.
    id: SessionId,
    /// What every session shares.
    hub: Hub,
    /// The socket's sending half.
    ws: actix_ws::Session,
    /// The signed-in account, or why there is none (the `orders` channel's answer).
    account: Result<Account, String>,
    /// The channels it is subscribed to.
    channels: HashSet<Channel>,
    /// When its queue overflowed lately.
    overflows: VecDeque<Instant>,
    /// When the client was last heard from (any frame, pongs included).
    heard: Instant,
    /// Test hook: the queue is not read until then.
    paused_until: Option<tokio::time::Instant>,
}

/// Why the loop ended.
struct Closing(Option<CloseReason>);

impl Session {
    /// A session for a connection of `account`.
    pub fn new(id: SessionId, hub: Hub, ws: actix_ws::Session, account: Result<Account, String>) -> Session {
        Session {
            id,
            hub,
            ws,
            account,
            channels: HashSet::new(),
            overflows: VecDeque::new(),
            heard: Instant::now(),
            paused_until: None,
        }
    }

    /// Runs until the client leaves, is closed, or the gateway stops.
    pub async fn run(mut self, mut stream: MessageStream, mut inbox: Inbox) {
        let closing = self.serve(&mut stream, &mut inbox).await;
        let _ = self.hub.feed.send(FeedMsg::Leave { id: self.id }).await;
        let Closing(reason) = closing;
        let _ = self.ws.close(reason).await;
    }

    async fn serve(&mut self, stream: &mut MessageStream, inbox: &mut Inbox) -> Closing {
        let hub = self.hub.clone();
        let config = &hub.config;
        let welcome = protocol::welcome(
            &self.hub.instance,
            self.account.as_ref().ok().map(Account::as_str),
            self.hub.metrics.feed_up.get() == 1,
            config.heartbeat.as_secs(),
            config.idle_timeout.as_secs(),
            config.queue,
        );
        if self.send(welcome).await.is_err() {
            return Closing(None);
        }
        let mut tick = tokio::time::interval(config.heartbeat);
        tick.tick().await;
        let shutdown = hub.shutdown.clone();
        loop {
            let paused = self.paused_until;
            tokio::select! {
                biased;
                () = shutdown.wait() => return close(CloseCode::Away, "the gateway is stopping"),
                msg = stream.recv() => {
                    self.heard = Instant::now();
                    let result = match msg {
                        Some(Ok(Message::Text(text))) => self.op(&text).await,
                        Some(Ok(Message::Ping(bytes))) => self.ws.pong(&bytes).await.map_err(|_| Closing(None)),
                        Some(Ok(Message::Binary(_))) => {
                            let r = Refusal::new("bad_request", "send text frames of JSON");
                            self.send(protocol::error(&r, None, None)).await
                        }
                        Some(Ok(Message::Close(_))) | None => return Closing(None),
                        Some(Err(e)) => return close(CloseCode::Protocol, &e.to_string()),
                        Some(Ok(_)) => Ok(()),
                    };
                    if let Err(c) = result {
                        return c;
                    }
                }
                next = inbox.next(), if paused.is_none() => {
                    let result = match next {
                        Next::Frame(f) => self.send(f).await,
                        Next::Overflowed => self.overflowed(inbox).await,
                        Next::Closed => return close(CloseCode::Away, "the feed stopped"),
                    };
                    if let Err(c) = result {
                        return c;
                    }
                }
                () = sleep_until(paused), if paused.is_some() => self.paused_until = None,
                _ = tick.tick() => {
                    if self.heard.elapsed() > self.hub.config.idle_timeout {
                        return close(CloseCode::Policy, "idle: nothing heard from the client, not even a pong");
                    }
                    if self.ws.ping(b"").await.is_err() {
                        return Closing(None);
                    }
                    if let Err(c) = self.send(protocol::heartbeat(now_ns())).await {
                        return c;
                    }
                }
            }
        }
    }

    /// Writes one frame.
    async fn send(&mut self, frame: ByteString) -> Result<(), Closing> {
        self.ws.text(frame).await.map_err(|_| Closing(None))?;
        self.hub.metrics.sent.inc();
        Ok(())
    }

    /// Answers one client message.
    async fn op(&mut self, text: &str) -> Result<(), Closing> {
        let op = match Op::parse(text) {
            Ok(op) => op,
            Err(r) => return self.send(protocol::error(&r, None, None)).await,
        };
        match op {
            Op::Subscribe { channel, id } => self.subscribe(&channel, id).await,
            Op::Unsubscribe { channel, id } => self.unsubscribe(&channel, id).await,
            Op::Ping { id } => self.send(protocol::pong(id)).await,
            Op::DebugPause { ms } if self.hub.config.test_hooks => {
                self.paused_until = Some(tokio::time::Instant::now() + Duration::from_millis(ms));
                Ok(())
            }
            Op::DebugSkip { channel } if self.hub.config.test_hooks => {
                match Channel::parse(&channel, &self.hub.table) {
                    Ok(Channel::Book(symbol)) => {
                        let _ = self.hub.feed.send(FeedMsg::Skip { id: self.id, symbol }).await;
                        Ok(())
                    }
                    _ => {
                        self.send(protocol::error(&Refusal::new("bad_channel", "a book channel"), None, None))
                            .await
                    }
                }
            }
            Op::DebugPause { .. } | Op::DebugSkip { .. } => {
                let r = Refusal::new("bad_request", "test hooks are off on this gateway");
                self.send(protocol::error(&r, None, None)).await
            }
        }
    }

    async fn subscribe(&mut self, name: &str, id: Option<Value>) -> Result<(), Closing> {
        let channel = match Channel::parse(name, &self.hub.table) {
            Ok(c) => c,
            Err(r) => return self.send(protocol::error(&r, Some(name), id)).await,
        };
        if channel == Channel::Orders {
            if let Err(why) = &self.account {
                let r =
                    Refusal::new("auth_required", format!("the orders channel is your own orders: {why}"));
                return self.send(protocol::error(&r, Some(name), id)).await;
            }
        }
        if !self.channels.insert(channel) {
            let r = Refusal::new("already_subscribed", format!("already subscribed to {name}"));
            return self.send(protocol::error(&r, Some(name), id)).await;
        }
        self.send(protocol::ack("subscribed", name, id)).await?;
        let _ = self.hub.feed.send(FeedMsg::Subscribe { id: self.id, channel }).await;
        Ok(())
    }

    async fn unsubscribe(&mut self, name: &str, id: Option<Value>) -> Result<(), Closing> {
        let channel = match Channel::parse(name, &self.hub.table) {
            Ok(c) => c,
            Err(r) => return self.send(protocol::error(&r, Some(name), id)).await,
        };
        if !self.channels.remove(&channel) {
            let r = Refusal::new("not_subscribed", format!("not subscribed to {name}"));
            return self.send(protocol::error(&r, Some(name), id)).await;
        }
        let _ = self.hub.feed.send(FeedMsg::Unsubscribe { id: self.id, channel }).await;
        self.send(protocol::ack("unsubscribed", name, id)).await
    }

    /// The queue overflowed: the feed has taken this session off every channel. Drop what is
    /// queued, tell the client, and subscribe again (or close a client that keeps falling behind).
    async fn overflowed(&mut self, inbox: &mut Inbox) -> Result<(), Closing> {
        inbox.drain();
        let now = Instant::now();
        self.overflows.push_back(now);
        while self.overflows.front().is_some_and(|t| now.duration_since(*t) > OVERFLOW_WINDOW) {
            self.overflows.pop_front();
        }
        let mut names: Vec<String> = self.channels.iter().map(|c| c.name(&self.hub.table)).collect();
        names.sort();
        let closing = self.overflows.len() >= MAX_OVERFLOWS;
        self.send(protocol::overflow(&names, closing)).await?;
        if closing {
            self.hub.metrics.slow_closes.inc();
            return Err(close(CloseCode::Again, "too slow: the queue overflowed again and again"));
        }
        for &channel in &self.channels {
            let _ = self.hub.feed.send(FeedMsg::Subscribe { id: self.id, channel }).await;
        }
        Ok(())
    }
}

fn close(code: CloseCode, why: &str) -> Closing {
    Closing(Some(CloseReason { code, description: Some(why.to_owned()) }))
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
