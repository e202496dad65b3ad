//! The channel of one edge between two nodes, bounded in records rather than in batches.
//!
//! A bound in batches holds a very different amount of data depending on the upstream batch
//! size: 16 of the Kafka source's 2,048-record batches of parsed 1 KiB JSON are ~80 MiB on one
//! edge, and a barrier waits behind all of them. A bound in records keeps both the memory and
//! the time a barrier queues behind data the same whatever the batch size.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::Semaphore;

use crate::record::Message;

/// Records in flight on one edge; a full edge is backpressure. Four of the Kafka source's
/// default batches: enough to keep both ends busy on two cores, little enough that a
/// barrier is at most a few milliseconds of data behind.
pub const EDGE_RECORDS: u32 = 8192;

/// The sending end: waits for room for a message's records, then queues it.
pub struct EdgeSender {
    tx: UnboundedSender<(Message, u32)>,
    room: Arc<Semaphore>,
    capacity: u32,
}

/// The receiving end: taking a message frees its records' room. Dropping it wakes and fails
/// every waiting sender (the job is stopping).
pub struct EdgeReceiver {
    rx: UnboundedReceiver<(Message, u32)>,
    room: Arc<Semaphore>,
}

/// An edge holding at most `records` records (and always at least one message).
pub fn edge(records: u32) -> (EdgeSender, EdgeReceiver) {
    let records = records.max(1);
    let (tx, rx) = mpsc::unbounded_channel();
    let room = Arc::new(Semaphore::new(records as usize));
    (
        EdgeSender {
            tx,
            room: room.clone(),
            capacity: records,
        },
        EdgeReceiver { rx, room },
    )
}

/// The room a message takes: its records, at least one (barriers, watermarks and the end
/// are ordered with the data, so they queue too), and at most the whole edge (a batch larger
/// than the edge waits until the edge is empty).
fn cost(m: &Message, capacity: u32) -> u32 {
    let n = match m {
        Message::Batch(b) => b.len(),
        _ => 1,
    };
    u32::try_from(n).unwrap_or(u32::MAX).clamp(1, capacity)
}

impl EdgeSender {
    /// Queues `m` once there is room; `Err(m)` when the receiver is gone.
    pub async fn send(&self, m: Message) -> Result<(), Message> {
        let n = cost(&m, self.capacity);
        match self.room.acquire_many(n).await {
            // The receiver gives the room back when it takes the message.
            Ok(permit) => permit.forget(),
            Err(_) => return Err(m),
        }
        self.tx.send((m, n)).map_err(|e| e.0 .0)
    }
}

impl EdgeReceiver {
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx).map(|m| {
            m.map(|(m, n)| {
                self.room.add_permits(n as usize);
                m
            })
        })
    }

    pub async fn recv(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl Drop for EdgeReceiver {
    fn drop(&mut self) {
        self.room.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::test_support::{barrier, batch};

    fn records(m: &Message) -> usize {
        match m {
            Message::Batch(b) => b.len(),
            _ => 0,
        }
    }

    #[tokio::test]
    async fn a_full_edge_holds_the_sender_until_the_receiver_takes_records() {
        let (tx, mut rx) = edge(10);
        tx.send(batch(6)).await.unwrap();
        tx.send(batch(4)).await.unwrap();
        // 10 records queued: a barrier (one unit of room) waits.
        let blocked = tokio::time::timeout(Duration::from_millis(50), tx.send(barrier(1))).await;
        assert!(blocked.is_err(), "sent into a full edge");
        assert_eq!(records(&rx.recv().await.unwrap()), 6);
        tx.send(barrier(1)).await.unwrap();
        assert_eq!(records(&rx.recv().await.unwrap()), 4);
        assert!(matches!(rx.recv().await, Some(Message::Barrier(b)) if b.id == 1));
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_edge_waits_for_an_empty_edge_instead_of_forever() {
        let (tx, mut rx) = edge(10);
        tx.send(batch(3)).await.unwrap();
        let sending = tokio::spawn(async move {
            tx.send(batch(25)).await.unwrap();
            tx
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !sending.is_finished(),
            "a 25-record batch passed 3 queued records"
        );
        assert_eq!(records(&rx.recv().await.unwrap()), 3);
        let _tx = sending.await.unwrap();
        assert_eq!(records(&rx.recv().await.unwrap()), 25);
    }

    #[tokio::test]
    async fn a_dropped_receiver_fails_waiting_and_later_sends_and_a_dropped_sender_ends_the_edge() {
        let (tx, rx) = edge(2);
        tx.send(batch(2)).await.unwrap();
        let waiting = tokio::spawn(async move {
            let r = tx.send(batch(1)).await;
            (r.is_err(), tx.send(barrier(1)).await.is_err())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        assert_eq!(waiting.await.unwrap(), (true, true));

        let (tx, mut rx) = edge(2);
        tx.send(batch(1)).await.unwrap();
        drop(tx);
        assert_eq!(records(&rx.recv().await.unwrap()), 1);
        assert!(rx.recv().await.is_none());
    }
}
