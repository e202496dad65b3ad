//! The input side of a node with one or more inputs: aligns barriers (an input that delivered
//! barrier n is not read again until every live input has), merges watermarks (minimum over live
//! inputs) and ends when every input has ended.

use std::future::poll_fn;
use std::task::Poll;

use super::edge::EdgeReceiver;
use crate::record::{Barrier, Batch, Message};

#[derive(Debug)]
pub enum GateEvent {
    Batch(Batch),
    Watermark(i64),
    /// Delivered once the barrier has arrived on every live input.
    Barrier(Barrier),
    End,
}

pub struct InputGate {
    inputs: Vec<EdgeReceiver>,
    blocked: Vec<bool>,
    ended: Vec<bool>,
    watermarks: Vec<i64>,
    current: i64,
    pending: Option<Barrier>,
    next: usize,
}

impl InputGate {
    pub fn new(inputs: Vec<EdgeReceiver>) -> Self {
        let n = inputs.len();
        InputGate {
            inputs,
            blocked: vec![false; n],
            ended: vec![false; n],
            watermarks: vec![i64::MIN; n],
            current: i64::MIN,
            pending: None,
            next: 0,
        }
    }

    fn live(&self) -> usize {
        self.ended.iter().filter(|e| !**e).count()
    }

    fn arrived(&self) -> usize {
        (0..self.inputs.len())
            .filter(|i| self.blocked[*i] && !self.ended[*i])
            .count()
    }

    /// Releases a pending barrier when every live input has delivered it.
    fn try_release(&mut self) -> Option<Barrier> {
        let b = self.pending?;
        if self.arrived() == self.live() {
            self.pending = None;
            self.blocked.iter_mut().for_each(|x| *x = false);
            return Some(b);
        }
        None
    }

    fn merged_watermark(&self) -> Option<i64> {
        (0..self.inputs.len())
            .filter(|i| !self.ended[*i])
            .map(|i| self.watermarks[i])
            .min()
    }

    async fn recv_any(&mut self) -> Option<(usize, Option<Message>)> {
        poll_fn(|cx| {
            let n = self.inputs.len();
            let mut any_open = false;
            for step in 0..n {
                let k = (self.next + step) % n;
                if self.ended[k] || self.blocked[k] {
                    any_open |= !self.ended[k];
                    continue;
                }
                any_open = true;
                if let Poll::Ready(m) = self.inputs[k].poll_recv(cx) {
                    self.next = (k + 1) % n;
                    return Poll::Ready(Some((k, m)));
                }
            }
            if any_open {
                Poll::Pending
            } else {
                Poll::Ready(None)
            }
        })
        .await
    }

    pub async fn next(&mut self) -> GateEvent {
        loop {
            let Some((k, msg)) = self.recv_any().await else {
                return GateEvent::End;
            };
            match msg {
                Some(Message::Batch(b)) => return GateEvent::Batch(b),
                Some(Message::Watermark(w)) => {
                    self.watermarks[k] = self.watermarks[k].max(w);
                    if let Some(m) = self.merged_watermark() {
                        if m > self.current {
                            self.current = m;
                            return GateEvent::Watermark(m);
                        }
                    }
                }
                Some(Message::Barrier(b)) => {
                    self.blocked[k] = true;
                    self.pending = Some(b);
                    if let Some(b) = self.try_release() {
                        return GateEvent::Barrier(b);
                    }
                }
                Some(Message::End) | None => {
                    self.ended[k] = true;
                    if let Some(b) = self.try_release() {
                        return GateEvent::Barrier(b);
                    }
                    if self.live() == 0 {
                        return GateEvent::End;
                    }
                    if let Some(m) = self.merged_watermark() {
                        if m > self.current {
                            self.current = m;
                            return GateEvent::Watermark(m);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::edge::edge;
    use crate::engine::test_support::{barrier, batch};

    #[tokio::test]
    async fn barrier_blocks_the_fast_input_until_the_slow_one_catches_up() {
        let (a_tx, a) = edge(8);
        let (b_tx, b) = edge(8);
        let mut gate = InputGate::new(vec![a, b]);
        a_tx.send(batch(1)).await.unwrap();
        a_tx.send(barrier(1)).await.unwrap();
        a_tx.send(batch(2)).await.unwrap(); // after the barrier: must wait
        b_tx.send(batch(3)).await.unwrap();
        b_tx.send(barrier(1)).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            match gate.next().await {
                GateEvent::Batch(b) => seen.push(format!("b{}", b.len())),
                GateEvent::Barrier(b) => seen.push(format!("B{}", b.id)),
                other => seen.push(format!("{other:?}")),
            }
        }
        assert_eq!(seen, vec!["b1", "b3", "B1", "b2"]);
    }

    #[tokio::test]
    async fn watermark_is_the_minimum_and_ended_inputs_stop_counting() {
        let (a_tx, a) = edge(8);
        let (b_tx, b) = edge(8);
        let mut gate = InputGate::new(vec![a, b]);
        a_tx.send(Message::Watermark(100)).await.unwrap();
        b_tx.send(Message::Watermark(50)).await.unwrap();
        match gate.next().await {
            GateEvent::Watermark(w) => assert_eq!(w, 50),
            e => panic!("{e:?}"),
        }
        b_tx.send(Message::End).await.unwrap();
        match gate.next().await {
            GateEvent::Watermark(w) => assert_eq!(w, 100),
            e => panic!("{e:?}"),
        }
        drop(a_tx);
        assert!(matches!(gate.next().await, GateEvent::End));
    }

    #[tokio::test]
    async fn a_barrier_pending_on_an_input_that_ends_is_released() {
        let (a_tx, a) = edge(8);
        let (b_tx, b) = edge(8);
        let mut gate = InputGate::new(vec![a, b]);
        a_tx.send(barrier(4)).await.unwrap();
        b_tx.send(Message::End).await.unwrap();
        assert!(matches!(
            gate.next().await,
            GateEvent::Barrier(Barrier { id: 4, .. })
        ));
    }
}
