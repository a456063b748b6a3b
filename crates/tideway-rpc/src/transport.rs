//! What the server and client share: the tokio-util codec around the sans-IO decoder, and the
//! connection writer task that coalesces queued frames into few writes.

use std::collections::HashMap;
use std::hash::Hash;
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

/// Maps at or below this many slots are never shrunk (shrinking them would save little).
const MIN_SHRINK_CAPACITY: usize = 64;

/// Removes `key` from a per-connection map of calls; when the map has become sparse (under a
/// quarter full) it gives the memory back. A burst of 2,000 concurrent calls grows such a map to
/// about 4,096 slots, and a `HashMap` never shrinks by itself: without this, the burst's peak
/// stays allocated for the connection's life. Shrinking to the current size (then growing by
/// doubling) keeps the cost amortized.
pub(crate) fn remove_and_shrink<K: Hash + Eq, V>(map: &mut HashMap<K, V>, key: &K) -> Option<V> {
    let removed = map.remove(key);
    if removed.is_some() && map.capacity() > MIN_SHRINK_CAPACITY && map.len() * 4 < map.capacity() {
        map.shrink_to_fit();
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_emptied_after_a_burst_gives_its_memory_back() {
        let mut map: HashMap<u64, u64> = HashMap::new();
        for i in 0..2_000 {
            map.insert(i, i);
        }
        let peak = map.capacity();
        assert!(peak >= 2_000);
        for i in 0..2_000 {
            assert_eq!(remove_and_shrink(&mut map, &i), Some(i));
            assert!(map.len() * 4 >= map.capacity() || map.capacity() <= MIN_SHRINK_CAPACITY);
        }
        assert!(map.capacity() <= MIN_SHRINK_CAPACITY, "{}", map.capacity());
        assert_eq!(remove_and_shrink(&mut map, &5), None);
    }
}
