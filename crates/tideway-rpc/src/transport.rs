//! What the server and client share: the tokio-util codec around the sans-IO decoder, and the
//! connection writer task that coalesces queued frames into few writes.

use std::collections::HashMap;
use std::io;

use bytes::BytesMut;
use tideway_wire::{DecodeError, Frame, FrameDecoder};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Most bytes the writer gathers before it writes; bounds its buffer and the latency added by
/// coalescing.
const MAX_WRITE_BATCH_BYTES: usize = 64 * 1024;
/// A write buffer that grew past this (one large frame) is freed instead of kept for reuse, so an
/// idle connection does not hold a large allocation.
const MAX_RETAINED_WRITE_BUFFER: usize = 256 * 1024;

/// Why a connection's byte stream ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// The peer sent bytes that are not a valid frame.
    #[error("malformed frame: {0}")]
    Decode(#[from] DecodeError),
}

/// `tokio_util::codec::Decoder` around the sans-IO [`FrameDecoder`].
#[derive(Debug)]
pub(crate) struct WireCodec(pub(crate) FrameDecoder);

impl tokio_util::codec::Decoder for WireCodec {
    type Item = Frame;
    type Error = ReadError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ReadError> {
        Ok(self.0.decode(src)?)
    }
}

/// Writes frames from `rx` until every sender is gone or `closed` fires; gathers whatever is
/// queued into one buffer per write. On a write error it cancels `closed` so the reader side
/// shuts down too.
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    mut io: W,
    mut rx: mpsc::Receiver<Frame>,
    closed: CancellationToken,
) {
    let mut buf = BytesMut::new();
    // One waiter on `closed` for the whole loop, polled only when there is nothing to do: one
    // made and dropped per batch took the token's lock each time.
    let cancelled = closed.cancelled();
    tokio::pin!(cancelled);
    loop {
        let first = tokio::select! {
            biased;
            frame = rx.recv() => frame,
            () = &mut cancelled => None,
        };
        let Some(first) = first else { break };
        encode_into(&first, &mut buf);
        let mut yielded = false;
        loop {
            while buf.len() < MAX_WRITE_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(frame) => encode_into(&frame, &mut buf),
                    Err(_) => break,
                }
            }
            if yielded || buf.len() >= MAX_WRITE_BATCH_BYTES {
                break;
            }
            // Step aside once: tasks that are ready now (and the I/O they are about to read)
            // queue their frames too, and one write carries them all. Under load this turns
            // several small writes into one; idle, it costs one scheduler pass.
            yielded = true;
            tokio::task::yield_now().await;
        }
        let written = tokio::select! {
            biased;
            res = io.write_all(&buf) => res,
            () = &mut cancelled => break,
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "connection write failed");
            break;
        }
        buf.clear();
        if buf.capacity() > MAX_RETAINED_WRITE_BUFFER {
            buf = BytesMut::new();
        }
    }
    let _ = io.shutdown().await;
    closed.cancel();
}

fn encode_into(frame: &Frame, buf: &mut BytesMut) {
    // Senders check sizes before queueing, so this only fails on a bug; drop the frame rather
    // than the connection.
    if let Err(e) = frame.encode(buf) {
        tracing::error!(error = %e, kind = ?frame.kind(), "dropping frame that cannot be encoded");
    }
}

/// Maps at or below this many slots are never shrunk (shrinking them would save little), and a
/// map's peak is looked at again after this many removals.
const MIN_SHRINK_CAPACITY: usize = 64;

/// Hashes request ids: foldhash, randomly seeded per map. A server's ids are chosen by its
/// client, so the seed keeps them from being picked to collide; SipHash (std's default) cost
/// more than the rest of the map's work per call.
type IdHasher = foldhash::fast::RandomState;

/// A connection's calls in flight by request id (the client's waiting callers, the server's
/// running handlers), which gives its memory back once it stays sparse.
///
/// A burst of 2,000 concurrent calls grows a map to about 4,096 slots, and a `HashMap` never
/// shrinks by itself: without shrinking, the burst's peak stays allocated for the connection's
/// life. But calls come and go in batches (64 requests in, 64 answers out in one read), so the
/// size swings between none and the batch every few microseconds; shrinking whenever the map
/// looks sparse (it did, to its current size) made it regrow, rehashing every entry, about
/// every thirty calls. So every `MIN_SHRINK_CAPACITY` removals, and whenever it empties, the map
/// looks at its largest size over the last two such periods and keeps room for twice that.
#[derive(Debug)]
pub(crate) struct CallMap<V> {
    map: HashMap<u64, V, IdHasher>,
    /// The most entries held since the last look, and between the two looks before it.
    peak: usize,
    previous_peak: usize,
    /// Removals since the last look.
    removals: usize,
    #[cfg(test)]
    shrinks: usize,
}

impl<V> Default for CallMap<V> {
    fn default() -> Self {
        Self {
            map: HashMap::with_hasher(IdHasher::default()),
            peak: 0,
            previous_peak: 0,
            removals: 0,
            #[cfg(test)]
            shrinks: 0,
        }
    }
}

impl<V> CallMap<V> {
    pub(crate) fn insert(&mut self, id: u64, value: V) -> Option<V> {
        let replaced = self.map.insert(id, value);
        self.peak = self.peak.max(self.map.len());
        replaced
    }

    pub(crate) fn contains_key(&self, id: &u64) -> bool {
        self.map.contains_key(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Every entry, leaving the map empty (and its memory freed).
    pub(crate) fn take_all(&mut self) -> impl Iterator<Item = (u64, V)> + use<V> {
        std::mem::take(self).map.into_iter()
    }

    /// Removes `id`; when the map was never a quarter full over its last two periods, gives
    /// the rest back (keeping room for twice their peak).
    pub(crate) fn remove(&mut self, id: &u64) -> Option<V> {
        let removed = self.map.remove(id)?;
        self.removals += 1;
        if self.removals >= MIN_SHRINK_CAPACITY || self.map.is_empty() {
            let capacity = self.map.capacity();
            let peak = self.peak.max(self.previous_peak);
            if capacity > MIN_SHRINK_CAPACITY && peak * 4 < capacity {
                self.map.shrink_to(peak * 2);
                #[cfg(test)]
                {
                    self.shrinks += 1;
                }
            }
            self.previous_peak = self.peak;
            self.peak = self.map.len();
            self.removals = 0;
        }
        Some(removed)
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.map.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_emptied_after_a_burst_gives_its_memory_back() {
        let mut map: CallMap<u64> = CallMap::default();
        for i in 0..2_000 {
            map.insert(i, i);
        }
        let peak = map.capacity();
        assert!(peak >= 2_000);
        for i in 0..2_000 {
            assert_eq!(map.remove(&i), Some(i));
        }
        // Room for twice the last removals' peak (at most 2 x 64 entries), not for 2,000.
        assert!(
            map.capacity() <= 4 * MIN_SHRINK_CAPACITY,
            "{}",
            map.capacity()
        );
        assert_eq!(map.remove(&5), None);
        assert_eq!(map.len(), 0);
    }

    #[test]
    fn a_map_that_fills_and_empties_by_batches_keeps_its_size() {
        let mut map: CallMap<u64> = CallMap::default();
        let mut next = 0;
        let mut batch = |map: &mut CallMap<u64>| {
            for i in next..next + 100 {
                map.insert(i, i);
            }
            for i in next..next + 100 {
                assert_eq!(map.remove(&i), Some(i));
            }
            next += 100;
        };
        for _ in 0..50 {
            batch(&mut map);
        }
        // (`capacity` is no measure here: std's map counts slots freed by a removal as taken
        // until it next rehashes.)
        assert_eq!(map.shrinks, 0, "shrunk between batches");
    }

    #[test]
    fn a_map_whose_load_falls_shrinks_to_twice_the_new_load() {
        let mut map: CallMap<u64> = CallMap::default();
        for i in 0..1_000 {
            map.insert(i, i);
        }
        for i in 0..1_000 {
            map.remove(&i);
        }
        // Now 10 at a time.
        for round in 0..20u64 {
            let base = 10_000 + round * 10;
            for i in base..base + 10 {
                map.insert(i, i);
            }
            for i in base..base + 10 {
                map.remove(&i);
            }
        }
        assert!(
            map.capacity() <= MIN_SHRINK_CAPACITY * 2,
            "{}",
            map.capacity()
        );
    }

    #[test]
    fn taking_all_empties_the_map() {
        let mut map: CallMap<u64> = CallMap::default();
        map.insert(1, 10);
        map.insert(2, 20);
        let mut all: Vec<_> = map.take_all().collect();
        all.sort();
        assert_eq!(all, vec![(1, 10), (2, 20)]);
        assert_eq!(map.len(), 0);
        assert!(!map.contains_key(&1));
    }
}
