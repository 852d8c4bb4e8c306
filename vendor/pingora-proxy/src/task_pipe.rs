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

//! The pipes between the two halves of a request proxied to an HTTP/1 upstream
//! (`proxy_1to1`): the downstream half sends the request body's tasks through one, the
//! upstream half the response's through the other.
//!
//! Each end has one user, both halves run in one task (`try_join!`), and a pipe holds at
//! most [`CAPACITY`] tasks. So a pipe is a ring of that many slots behind one lock, with a
//! waker for each end: one allocation per pipe. Tokio's `mpsc`, which 0.9.1 used here, is
//! built for many senders in many tasks: two allocations per channel (the channel and a
//! block of 32 slots), a semaphore, and atomic bookkeeping on every send and receive.
//!
//! The API is the part of `mpsc`'s that `proxy_h1` uses, with the same meaning: `reserve`
//! takes a slot that its [`Permit`] fills (or gives back when dropped unused), `recv` returns
//! `None` once the sender is gone and the pipe is empty, and `is_closed` says the receiver is
//! gone (a task sent then is dropped). `recv` and `reserve` are cancel safe: a future dropped
//! before it is ready has taken nothing.

use std::fmt;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::TASK_BUFFER_SIZE as CAPACITY;

/// A new pipe's two ends.
pub(crate) fn pipe<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared(Mutex::new(State {
        slots: std::array::from_fn(|_| None),
        head: 0,
        len: 0,
        reserved: 0,
        sender_alive: true,
        receiver_alive: true,
        sender_waker: None,
        receiver_waker: None,
    })));
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// The sending end.
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving end.
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// A slot taken in the pipe: [`Permit::send`] fills it and cannot wait or fail.
pub(crate) struct Permit<'a, T> {
    sender: &'a Sender<T>,
}

/// The receiving end is gone.
#[derive(Debug)]
pub(crate) struct Closed;

/// Why [`Sender::try_reserve`] took no slot.
#[derive(Debug)]
pub(crate) enum TryReserveError {
    /// Every slot is taken.
    Full,
    /// The receiving end is gone.
    Closed,
}

struct Shared<T>(Mutex<State<T>>);

struct State<T> {
    /// A ring: `len` tasks from `head` on.
    slots: [Option<T>; CAPACITY],
    head: usize,
    len: usize,
    /// Slots taken by permits not yet used.
    reserved: usize,
    sender_alive: bool,
    receiver_alive: bool,
    /// The sender waiting for a free slot.
    sender_waker: Option<Waker>,
    /// The receiver waiting for a task.
    receiver_waker: Option<Waker>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding it, but a poisoned pipe is still a consistent one.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T> State<T> {
    fn try_reserve(&mut self) -> Result<(), TryReserveError> {
        if !self.receiver_alive {
            Err(TryReserveError::Closed)
        } else if self.len + self.reserved == CAPACITY {
            Err(TryReserveError::Full)
        } else {
            self.reserved += 1;
            Ok(())
        }
    }
}

impl<T> Sender<T> {
    /// Sends `task` once a slot is free; fails if the receiver is gone.
    pub(crate) async fn send(&self, task: T) -> Result<(), Closed> {
        self.reserve().await?.send(task);
        Ok(())
    }

    /// Takes a slot once one is free; fails if the receiver is gone.
    pub(crate) async fn reserve(&self) -> Result<Permit<'_, T>, Closed> {
        poll_fn(|cx| self.poll_reserve(cx)).await
    }

    fn poll_reserve(&self, cx: &mut Context<'_>) -> Poll<Result<Permit<'_, T>, Closed>> {
        let mut state = self.shared.lock();
        match state.try_reserve() {
            Ok(()) => Poll::Ready(Ok(Permit { sender: self })),
            Err(TryReserveError::Closed) => Poll::Ready(Err(Closed)),
            Err(TryReserveError::Full) => {
                register(&mut state.sender_waker, cx);
                Poll::Pending
            }
        }
    }

    /// Takes a slot if one is free now.
    pub(crate) fn try_reserve(&self) -> Result<Permit<'_, T>, TryReserveError> {
        self.shared.lock().try_reserve()?;
        Ok(Permit { sender: self })
    }

    /// Whether the receiving end is gone.
    pub(crate) fn is_closed(&self) -> bool {
        !self.shared.lock().receiver_alive
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.sender_alive = false;
        wake(&mut state.receiver_waker);
    }
}

impl<T> Permit<'_, T> {
    /// Puts `task` in the slot this permit took (dropped at once if the receiver is gone).
    pub(crate) fn send(self, task: T) {
        let mut state = self.sender.shared.lock();
        state.reserved -= 1;
        let unread = if state.receiver_alive {
            let tail = (state.head + state.len) % CAPACITY;
            state.slots[tail] = Some(task);
            state.len += 1;
            wake(&mut state.receiver_waker);
            None
        } else {
            Some(task)
        };
        drop(state);
        // Dropped outside the lock, as the receiver's drop does.
        drop(unread);
        // The slot is used: nothing to give back.
        std::mem::forget(self);
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        let mut state = self.sender.shared.lock();
        state.reserved -= 1;
        wake(&mut state.sender_waker);
    }
}

impl<T> fmt::Debug for Permit<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

impl<T> Receiver<T> {
    /// The next task, or `None` once the sender is gone and the pipe is empty.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.shared.lock();
        if state.len > 0 {
            let head = state.head;
            let task = state.slots[head].take();
            state.head = (head + 1) % CAPACITY;
            state.len -= 1;
            wake(&mut state.sender_waker);
            Poll::Ready(task)
        } else if !state.sender_alive {
            Poll::Ready(None)
        } else {
            register(&mut state.receiver_waker, cx);
            Poll::Pending
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_alive = false;
        let unread = std::mem::replace(&mut state.slots, std::array::from_fn(|_| None));
        state.len = 0;
        wake(&mut state.sender_waker);
        drop(state);
        // Dropped outside the lock: a task's drop can do anything.
        drop(unread);
    }
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the task pipe's receiver is gone")
    }
}

impl std::error::Error for Closed {}

impl fmt::Display for TryReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TryReserveError::Full => "the task pipe is full",
            TryReserveError::Closed => "the task pipe's receiver is gone",
        })
    }
}

impl std::error::Error for TryReserveError {}

/// Keeps `cx`'s waker in `slot`, unless the one there wakes the same task.
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

fn wake(slot: &mut Option<Waker>) {
    if let Some(waker) = slot.take() {
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_test::task::spawn;

    #[test]
    fn tasks_arrive_in_order_and_none_after_the_sender_is_gone() {
        let (tx, mut rx) = pipe();
        for i in 0..CAPACITY {
            tx.try_reserve().unwrap().send(i);
        }
        assert!(matches!(tx.try_reserve(), Err(TryReserveError::Full)));
        assert_eq!(spawn(rx.recv()).poll(), Poll::Ready(Some(0)));
        tx.try_reserve().unwrap().send(CAPACITY);
        drop(tx);
        for i in 1..=CAPACITY {
            assert_eq!(spawn(rx.recv()).poll(), Poll::Ready(Some(i)));
        }
        assert_eq!(spawn(rx.recv()).poll(), Poll::Ready(None));
    }

    #[test]
    fn a_permit_holds_its_slot_until_used_or_dropped() {
        let (tx, mut rx) = pipe();
        let permits: Vec<_> = (0..CAPACITY).map(|_| tx.try_reserve().unwrap()).collect();
        assert!(matches!(tx.try_reserve(), Err(TryReserveError::Full)));
        let mut waiting = spawn(tx.reserve());
        assert!(waiting.poll().is_pending());
        drop(permits);
        assert!(waiting.is_woken());
        let Poll::Ready(Ok(permit)) = waiting.poll() else {
            panic!("a slot was given back");
        };
        permit.send(7);
        assert_eq!(spawn(rx.recv()).poll(), Poll::Ready(Some(7)));
        assert!(spawn(rx.recv()).poll().is_pending());
    }

    #[test]
    fn a_full_pipe_wakes_its_sender_when_a_task_is_received() {
        let (tx, mut rx) = pipe();
        for i in 0..CAPACITY {
            tx.try_reserve().unwrap().send(i);
        }
        let mut sending = spawn(tx.send(CAPACITY));
        assert!(sending.poll().is_pending());
        assert_eq!(spawn(rx.recv()).poll(), Poll::Ready(Some(0)));
        assert!(sending.is_woken());
        assert!(matches!(sending.poll(), Poll::Ready(Ok(()))));
        for i in 1..=CAPACITY {
            assert_eq!(spawn(rx.recv()).poll(), Poll::Ready(Some(i)));
        }
    }

    #[test]
    fn a_waiting_receiver_is_woken_by_a_send_and_by_the_sender_leaving() {
        let (tx, mut rx) = pipe();
        let mut receiving = spawn(rx.recv());
        assert!(receiving.poll().is_pending());
        tx.try_reserve().unwrap().send(1);
        assert!(receiving.is_woken());
        assert_eq!(receiving.poll(), Poll::Ready(Some(1)));
        drop(receiving);
        let mut receiving = spawn(rx.recv());
        assert!(receiving.poll().is_pending());
        drop(tx);
        assert!(receiving.is_woken());
        assert_eq!(receiving.poll(), Poll::Ready(None));
    }

    #[test]
    fn without_a_receiver_the_pipe_is_closed_and_a_waiting_sender_fails() {
        let (tx, rx) = pipe();
        for i in 0..CAPACITY {
            tx.try_reserve().unwrap().send(i);
        }
        let mut sending = spawn(tx.send(CAPACITY));
        assert!(sending.poll().is_pending());
        drop(rx);
        assert!(sending.is_woken());
        assert!(matches!(sending.poll(), Poll::Ready(Err(Closed))));
        drop(sending);
        assert!(tx.is_closed());
        assert!(matches!(tx.try_reserve(), Err(TryReserveError::Closed)));

        let (tx, rx) = pipe::<u8>();
        let permit = tx.try_reserve().unwrap();
        drop(rx);
        permit.send(1);
        assert!(tx.is_closed());
    }

    #[test]
    fn the_tasks_left_unread_go_with_the_receiver() {
        let task = Arc::new(());
        let (tx, rx) = pipe();
        tx.try_reserve().unwrap().send(task.clone());
        tx.try_reserve().unwrap().send(task.clone());
        drop(rx);
        // Dropped with the receiver, while the sender still holds the pipe.
        assert_eq!(Arc::strong_count(&task), 1);
        assert!(tx.is_closed());
    }

    #[test]
    fn a_receive_dropped_before_it_is_ready_takes_nothing() {
        let (tx, mut rx) = pipe();
        assert!(spawn(rx.recv()).poll().is_pending());
        tx.try_reserve().unwrap().send(5);
        assert_eq!(spawn(rx.recv()).poll(), Poll::Ready(Some(5)));
    }
}
