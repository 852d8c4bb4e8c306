// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! The keep-alive pool of [`TransportConnector`](super::TransportConnector): idle upstream
//! streams (TCP or TLS), grouped by the peer's reuse hash, the most recently released taken first.
//!
//! A stream is released and picked up again for almost every request, so both are a short lock
//! on one of [`SHARDS`] maps and no task: a released stream registers the pool's waker with the
//! runtime's reactor (one read attempt, as a task reading it would make), and nothing runs while it
//! idles. One reaper task per pool wakes only when something is to be closed: a stream the server
//! closed, broke or sent unasked-for bytes on (the pool's waker fires), one idle past its timeout
//! (the reaper sleeps until the earliest deadline), or the pool dropped. Past the pool's size the
//! longest idle stream is closed at once. A stream picked up past its timeout, before the reaper
//! got to it, is closed instead of used. The reaper runs on the runtime of the first release: a
//! pool that outlives that runtime still closes expired streams when they are asked for, and
//! the connector's reuse check still refuses a closed one.
use super::PoolCallback;
use crate::protocols::Stream;
use futures::task::AtomicWaker;
use futures::FutureExt;
use log::{debug, warn};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};

/// How many locks the pool's groups are spread over.
const SHARDS: usize = 16;

/// "No deadline", in [`Shared::earliest_deadline`].
const NO_DEADLINE: u64 = u64::MAX;

/// The pool's keys are already hashes (`Peer::reuse_hash`): used as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

type Groups = HashMap<u64, Vec<Arc<Idle>>, BuildHasherDefault<KeyHasher>>;

/// The keep-alive pool: see the module's comment.
pub(crate) struct IdlePool {
    inner: Arc<Inner>,
}

struct Inner {
    shards: [Mutex<Groups>; SHARDS],
    shared: Arc<Shared>,
    /// `shared` as the waker every idle stream registers.
    waker: Waker,
    /// Streams in the pool, and how many it keeps.
    len: AtomicUsize,
    size: usize,
    reaper_started: AtomicBool,
    callback: Option<PoolCallback>,
    unexpected_data: Arc<AtomicU64>,
}

/// What an idle stream's waker reaches: the reaper.
struct Shared {
    /// Since when deadlines are counted, in milliseconds, in `earliest_deadline`.
    epoch: Instant,
    /// The earliest idle deadline of a stream in the pool (or one already picked up), or
    /// [`NO_DEADLINE`]: the reaper sleeps until then.
    earliest_deadline: AtomicU64,
    /// Set by a stream's waker: the reaper looks at every stream when it wakes. Set for good
    /// when the reaper is gone (its runtime shut down): then nothing looks again.
    something_closed: AtomicBool,
    /// Whether the reaper is between taking `something_closed` and the end of its sweep.
    sweeping: AtomicBool,
    reaper: AtomicWaker,
}

impl Shared {
    /// `deadline` in whole milliseconds since `epoch`, rounded up: the reaper, woken then, finds
    /// the deadline passed rather than waking again and again in the millisecond before it.
    fn millis(&self, deadline: Instant) -> u64 {
        let since = deadline.saturating_duration_since(self.epoch);
        let millis =
            since.as_millis() + u128::from(!since.subsec_nanos().is_multiple_of(1_000_000));
        u64::try_from(millis).unwrap_or(NO_DEADLINE - 1)
    }
}

/// A stream in the pool. Whoever takes the stream out (a request, the reaper, an eviction) owns
/// it; the others find `None`.
struct Idle {
    stream: Mutex<Option<Stream>>,
    key: u64,
    /// When it was released: the longest idle stream is the one released first.
    since: Instant,
    deadline: Option<Instant>,
}

/// The waker every idle stream registers: the pool's, not the stream's own, so that nothing
/// the reactor keeps refers back to a stream (an idle stream holding its own waker would never
/// be dropped).
impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    /// The reactor saw an idle stream readable: the server closed it, broke it or sent bytes.
    fn wake_by_ref(self: &Arc<Self>) {
        self.something_closed.store(true, Ordering::SeqCst);
        self.reaper.wake();
    }
}

impl Idle {
    fn take(&self) -> Option<Stream> {
        self.stream.lock().take()
    }

    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|deadline| deadline <= now)
    }

    /// Whether the stream is still idle: a one-byte read, with the pool's `waker` and outside
    /// any task's budget (a read refused for budget would wake the reaper for nothing), finds
    /// nothing to read, and leaves the waker registered. `false` if it found the stream closed,
    /// broken or carrying bytes nobody asked for, or already taken.
    fn still_idle(&self, waker: &Waker, unexpected_data: &AtomicU64) -> bool {
        let mut guard = self.stream.lock();
        let Some(stream) = guard.as_mut() else {
            return false;
        };
        let mut cx = Context::from_waker(waker);
        let mut byte = [0; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let read = tokio::task::unconstrained(std::future::poll_fn(|_| {
            Poll::Ready(Pin::new(&mut *stream).poll_read(&mut cx, &mut buf))
        }))
        .now_or_never()
        .expect("a future ready at its first poll");
        match read {
            Poll::Pending => return true,
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                debug!("idle upstream connection closed by the server");
            }
            Poll::Ready(Ok(())) => {
                warn!("Unexpected data read in idle connection");
                unexpected_data.fetch_add(1, Ordering::Relaxed);
            }
            Poll::Ready(Err(e)) => debug!("idle upstream connection is broken: {e:?}"),
        }
        false
    }
}

impl IdlePool {
    pub(crate) fn new(
        size: usize,
        callback: Option<PoolCallback>,
        unexpected_data: Arc<AtomicU64>,
    ) -> Self {
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            earliest_deadline: AtomicU64::new(NO_DEADLINE),
            something_closed: AtomicBool::new(false),
            sweeping: AtomicBool::new(false),
            reaper: AtomicWaker::new(),
        });
        IdlePool {
            inner: Arc::new(Inner {
                shards: std::array::from_fn(|_| Mutex::new(Groups::default())),
                waker: Waker::from(shared.clone()),
                shared,
                len: AtomicUsize::new(0),
                size,
                reaper_started: AtomicBool::new(false),
                callback,
                unexpected_data,
            }),
        }
    }

    /// Keeps `stream` for reuse under `key`, for at most `timeout`, unless a read finds it
    /// closed or carrying bytes nobody asked for (then it is closed now).
    pub(crate) fn put(&self, stream: Stream, key: u64, timeout: Option<Duration>) {
        let inner = &self.inner;
        let since = Instant::now();
        let idle = Arc::new(Idle {
            stream: Mutex::new(Some(stream)),
            key,
            since,
            deadline: timeout.map(|timeout| since + timeout),
        });
        if !idle.still_idle(&inner.waker, &inner.unexpected_data) {
            return;
        }
        self.start_reaper();
        let deadline = idle.deadline;
        inner.shard(key).lock().entry(key).or_default().push(idle);
        // Published after the stream is in its group: a sweep that missed the stream then
        // finds its deadline here, or one no later than it (when the reaper sweeps again).
        if let Some(deadline) = deadline {
            let at = inner.shared.millis(deadline);
            // Usually later than the earliest already set: a load, and no write.
            if at < inner.shared.earliest_deadline.load(Ordering::SeqCst) {
                inner
                    .shared
                    .earliest_deadline
                    .fetch_min(at, Ordering::SeqCst);
                inner.shared.reaper.wake();
            }
        }
        if inner.len.fetch_add(1, Ordering::Relaxed) + 1 > inner.size {
            inner.evict_longest_idle();
        }
    }

    /// The most recently released stream under `key` that has not outlived its timeout, and
    /// whether it is known to be idle still.
    ///
    /// It is known idle when no idle stream's waker has fired since the reaper last looked at
    /// every stream, and the reaper is not looking now: the reactor wakes a stream's waker when
    /// it sees the stream readable (closed, broken, or carrying bytes), which is what a read
    /// test would find. Read under the shard's lock: a sweep that was to look at this stream
    /// either did before (and closed it if it had to) or is still under way.
    pub(crate) fn get(&self, key: u64) -> Option<(Stream, bool)> {
        let inner = &self.inner;
        let mut groups = inner.shard(key).lock();
        let group = groups.get_mut(&key)?;
        let known_idle = !inner.shared.something_closed.load(Ordering::SeqCst)
            && !inner.shared.sweeping.load(Ordering::SeqCst);
        let mut found = None;
        let mut expired = Vec::new();
        while let Some(idle) = group.pop() {
            inner.len.fetch_sub(1, Ordering::Relaxed);
            let Some(stream) = idle.take() else {
                continue;
            };
            if idle.deadline.is_some() && idle.expired(Instant::now()) {
                expired.push(stream);
                continue;
            }
            found = Some((stream, known_idle));
            break;
        }
        // An emptied group is kept for the next release under its key (one request at a time
        // empties it every time); the reaper's sweep drops the groups it finds empty.
        drop(groups);
        // Closed outside the lock.
        drop(expired);
        found
    }

    /// Starts the reaper on the current runtime, the first time a stream is kept.
    fn start_reaper(&self) {
        let inner = &self.inner;
        if inner.reaper_started.load(Ordering::Relaxed)
            || inner.reaper_started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let pool = Arc::downgrade(inner);
        let shared = inner.shared.clone();
        let gone = ReaperGone(shared.clone());
        pingora_runtime::current_handle().spawn(reap(pool, shared, gone));
    }
}

impl Drop for IdlePool {
    fn drop(&mut self) {
        // The reaper holds the pool weakly: woken, it finds it gone and ends.
        self.inner.shared.reaper.wake();
    }
}

impl Inner {
    fn shard(&self, key: u64) -> &Mutex<Groups> {
        &self.shards[(key as usize) % SHARDS]
    }

    /// Closes the stream released longest ago, to keep the pool within its size.
    fn evict_longest_idle(&self) {
        let mut oldest: Option<Arc<Idle>> = None;
        for shard in &self.shards {
            for idle in shard.lock().values().flatten() {
                if oldest.as_ref().is_none_or(|o| idle.since < o.since) {
                    oldest = Some(idle.clone());
                }
            }
        }
        let Some(oldest) = oldest else {
            return;
        };
        if self.remove(&oldest) {
            if let Some(stream) = oldest.take() {
                debug!("idle upstream connection evicted from a full pool");
                drop(stream);
                if let Some(callback) = &self.callback {
                    callback(oldest.since.elapsed());
                }
            }
        }
    }

    /// Takes `idle` out of its group; `false` if it was no longer there.
    fn remove(&self, idle: &Arc<Idle>) -> bool {
        let mut groups = self.shard(idle.key).lock();
        let Some(group) = groups.get_mut(&idle.key) else {
            return false;
        };
        let Some(at) = group.iter().position(|other| Arc::ptr_eq(other, idle)) else {
            return false;
        };
        group.remove(at);
        self.len.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// Closes every stream that is unusable or past its deadline, and returns the earliest
    /// deadline left.
    fn sweep(&self, look: bool) -> Option<Instant> {
        let now = Instant::now();
        let mut closing = Vec::new();
        let mut removed = 0;
        let mut earliest: Option<Instant> = None;
        for shard in &self.shards {
            let mut groups = shard.lock();
            groups.retain(|_, group| {
                group.retain(|idle| {
                    let keep = !idle.expired(now)
                        && (!look || idle.still_idle(&self.waker, &self.unexpected_data));
                    if keep {
                        if let Some(deadline) = idle.deadline {
                            earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                        }
                    } else {
                        removed += 1;
                        closing.extend(idle.take());
                    }
                    keep
                });
                !group.is_empty()
            });
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        if !closing.is_empty() {
            debug!("closing {} idle upstream connections", closing.len());
        }
        drop(closing);
        earliest
    }
}

/// Marks the reaper gone when its future is dropped (its runtime shut down, even before it
/// first ran, or the pool dropped): no sweep will look at the streams again, so none is known
/// idle from then on.
struct ReaperGone(Arc<Shared>);

impl Drop for ReaperGone {
    fn drop(&mut self) {
        self.0.something_closed.store(true, Ordering::SeqCst);
    }
}

/// The pool's reaper: see the module's comment. Ends when the pool is dropped.
async fn reap(pool: Weak<Inner>, shared: Arc<Shared>, _gone: ReaperGone) {
    loop {
        let earliest = shared.earliest_deadline.load(Ordering::SeqCst);
        let woken = std::future::poll_fn(|cx| {
            shared.reaper.register(cx.waker());
            if shared.something_closed.load(Ordering::Acquire)
                || shared.earliest_deadline.load(Ordering::SeqCst) < earliest
                || pool.strong_count() == 0
            {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        if earliest == NO_DEADLINE {
            woken.await;
        } else {
            let at = shared.epoch + Duration::from_millis(earliest);
            let _ = tokio::time::timeout_at(at.into(), woken).await;
        }
        let Some(pool) = pool.upgrade() else {
            return;
        };
        shared.sweeping.store(true, Ordering::SeqCst);
        let look = shared.something_closed.swap(false, Ordering::SeqCst);
        // Cleared before the sweep: a deadline published from now on is kept by `fetch_min`,
        // and one published before is the deadline of a stream the sweep finds.
        shared
            .earliest_deadline
            .store(NO_DEADLINE, Ordering::SeqCst);
        let next = pool.sweep(look);
        shared.sweeping.store(false, Ordering::SeqCst);
        if let Some(next) = next {
            shared
                .earliest_deadline
                .fetch_min(shared.millis(next), Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn pool(size: usize) -> (IdlePool, Arc<AtomicU64>) {
        let unexpected = Arc::new(AtomicU64::new(0));
        (IdlePool::new(size, None, unexpected.clone()), unexpected)
    }

    /// A stream for the pool, and the server's end of it.
    fn connection() -> (Stream, DuplexStream) {
        let (client, server) = tokio::io::duplex(64);
        (Box::new(client), server)
    }

    /// Whether the pool closed its end of `server`'s connection within a few seconds.
    async fn closed(server: &mut DuplexStream) -> bool {
        let mut buf = [0; 8];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), server.read(&mut buf)).await {
                Ok(Ok(0)) => return true,
                Ok(Ok(_)) => continue,
                _ => return false,
            }
        }
    }

    /// Whether `stream` is the one `server` talks to.
    async fn talks_to(stream: &mut Stream, server: &mut DuplexStream) -> bool {
        server.write_all(b"x").await.unwrap();
        let mut byte = [0; 1];
        stream.read_exact(&mut byte).await.is_ok()
    }

    #[tokio::test]
    async fn the_last_stream_released_under_a_key_is_taken_first() {
        let (pool, _) = pool(8);
        let (first, mut first_server) = connection();
        let (second, mut second_server) = connection();
        let (other, _other_server) = connection();
        pool.put(first, 1, None);
        pool.put(second, 1, None);
        pool.put(other, 2, None);
        let (mut taken, _) = pool.get(1).unwrap();
        assert!(talks_to(&mut taken, &mut second_server).await);
        let (mut taken, _) = pool.get(1).unwrap();
        assert!(talks_to(&mut taken, &mut first_server).await);
        assert!(pool.get(1).is_none());
        assert!(pool.get(2).is_some());
        assert!(pool.get(3).is_none());
        assert_eq!(pool.inner.len.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn bytes_sent_on_an_idle_stream_close_it_and_are_counted() {
        let (pool, unexpected) = pool(8);
        let (stream, mut server) = connection();
        pool.put(stream, 1, None);
        server.write_all(b"surprise").await.unwrap();
        assert!(closed(&mut server).await);
        assert!(pool.get(1).is_none());
        assert_eq!(unexpected.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_quiet_stream_is_known_idle_and_one_that_woke_is_not_until_the_reaper_looked() {
        let (pool, unexpected) = pool(8);
        let (quiet, _quiet_server) = connection();
        let (busy, mut busy_server) = connection();
        pool.put(quiet, 1, None);
        pool.put(busy, 2, None);
        // Let the reaper start and go to sleep.
        tokio::task::yield_now().await;
        let (quiet, known_idle) = pool.get(1).unwrap();
        assert!(known_idle);
        pool.put(quiet, 1, None);

        // The bytes wake the pool's waker at once; the reaper has not run since.
        busy_server.write_all(b"surprise").await.unwrap();
        let (quiet, known_idle) = pool.get(1).unwrap();
        assert!(
            !known_idle,
            "a stream woke and the reaper has not looked yet"
        );
        pool.put(quiet, 1, None);

        // The reaper closes the one that woke, and the others are known idle again.
        assert!(closed(&mut busy_server).await);
        assert_eq!(unexpected.load(Ordering::Relaxed), 1);
        let (_, known_idle) = pool.get(1).unwrap();
        assert!(known_idle);
        assert!(pool.get(2).is_none());
    }

    #[test]
    fn no_stream_is_known_idle_once_the_reaper_is_gone() {
        let (pool, _) = pool(8);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (stream, _server) = connection();
        // The reaper starts on this runtime, and ends with it.
        runtime.block_on(async { pool.put(stream, 1, None) });
        drop(runtime);
        let (stream, known_idle) = pool.get(1).unwrap();
        assert!(!known_idle);
        drop(stream);
    }

    #[tokio::test]
    async fn a_stream_already_closed_when_released_is_not_kept() {
        let (pool, _) = pool(8);
        let (stream, server) = connection();
        drop(server);
        pool.put(stream, 1, None);
        assert!(pool.get(1).is_none());
        assert_eq!(pool.inner.len.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_stream_past_its_timeout_is_closed_when_asked_for_before_the_reaper_runs() {
        let (pool, _) = pool(8);
        let (stream, mut server) = connection();
        pool.put(stream, 1, Some(Duration::from_millis(5)));
        // Blocks this runtime's only thread: the reaper cannot run in between.
        std::thread::sleep(Duration::from_millis(20));
        assert!(pool.get(1).is_none());
        assert!(closed(&mut server).await);
    }

    #[tokio::test]
    async fn a_shorter_timeout_released_later_is_kept_to() {
        let (pool, _) = pool(8);
        let (long, mut long_server) = connection();
        let (short, mut short_server) = connection();
        pool.put(long, 1, Some(Duration::from_secs(60)));
        // Let the reaper go to sleep until the long deadline.
        tokio::task::yield_now().await;
        pool.put(short, 2, Some(Duration::from_millis(20)));
        assert!(closed(&mut short_server).await);
        let (mut kept, _) = pool.get(1).unwrap();
        assert!(talks_to(&mut kept, &mut long_server).await);
    }

    #[tokio::test]
    async fn a_full_pool_closes_its_longest_idle_stream_and_says_how_long_it_idled() {
        let idled = Arc::new(Mutex::new(Vec::new()));
        let seen = idled.clone();
        let callback: PoolCallback = Arc::new(move |idle| seen.lock().push(idle));
        let pool = IdlePool::new(2, Some(callback), Arc::new(AtomicU64::new(0)));
        let (oldest, mut oldest_server) = connection();
        let (middle, _middle_server) = connection();
        let (newest, _newest_server) = connection();
        pool.put(oldest, 1, None);
        pool.put(middle, 2, None);
        pool.put(newest, 1, None);
        assert!(closed(&mut oldest_server).await);
        assert_eq!(idled.lock().len(), 1);
        assert!(pool.get(1).is_some());
        assert!(pool.get(1).is_none());
        assert!(pool.get(2).is_some());
    }

    #[test]
    fn deadlines_round_up_to_the_millisecond() {
        let (pool, _) = pool(8);
        let shared = &pool.inner.shared;
        let at = |micros| shared.millis(shared.epoch + Duration::from_micros(micros));
        assert_eq!(at(0), 0);
        assert_eq!(at(1), 1);
        assert_eq!(at(1_500), 2);
        assert_eq!(at(2_000), 2);
    }

    #[tokio::test]
    async fn the_reaper_ends_with_its_pool() {
        let metrics = tokio::runtime::Handle::current().metrics();
        let (pool, _) = pool(8);
        let (stream, mut server) = connection();
        pool.put(stream, 1, None);
        assert_eq!(metrics.num_alive_tasks(), 1);
        drop(pool);
        assert!(closed(&mut server).await);
        for _ in 0..100 {
            if metrics.num_alive_tasks() == 0 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the reaper outlived its pool");
    }
}
