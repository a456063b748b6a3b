//! The gateway's body types: [`GatewayBody`], one response body type for buffered JSON and
//! streamed upstream bodies alike, and `IngressBody`, a request body as either HTTP/1 path
//! hands it over (hyper's streaming `Incoming`, or the bytes the gateway's own HTTP/1.1 reader
//! already holds whole).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use crate::overload::HeldBytes;

/// Errors a response body can yield while streaming.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body the gateway sends. The kinds nearly every response has (known bytes,
/// possibly counted against the memory budget) are held inline; any other body (a streamed
/// upstream body) is boxed. So an RPC answer, an error, or an upstream answer read whole with
/// its head costs no allocation for its body.
#[derive(Debug)]
pub struct GatewayBody(Kind);

#[derive(Debug)]
enum Kind {
    /// Known bytes; `_held` counts them against the memory budget until the body is dropped
    /// (hyper drops it after its last frame).
    Full {
        body: Full<Bytes>,
        _held: Option<HeldBytes>,
    },
    Boxed(BoxBody<Bytes, BoxError>),
}

impl GatewayBody {
    /// Any other body, boxed.
    pub fn new<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        GatewayBody(Kind::Boxed(body.map_err(Into::into).boxed()))
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Kind::Full { body, .. } => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            Kind::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full { body, .. } => body.is_end_stream(),
            Kind::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full { body, .. } => body.size_hint(),
            Kind::Boxed(body) => body.size_hint(),
        }
    }
}

/// A body of known bytes.
pub fn full(bytes: impl Into<Bytes>) -> GatewayBody {
    GatewayBody(Kind::Full {
        body: Full::new(bytes.into()),
        _held: None,
    })
}

/// An empty body.
pub fn empty() -> GatewayBody {
    full(Bytes::new())
}

/// A body of known bytes that count against the memory budget until the connection has taken
/// them (hyper drops the body after its last frame).
pub(crate) fn held(bytes: Bytes, held: HeldBytes) -> GatewayBody {
    GatewayBody(Kind::Full {
        body: Full::new(bytes),
        _held: Some(held),
    })
}

/// A request body: streamed by hyper (HTTP/2, TLS and any HTTP/1.1 request outside the fast
/// path), or read whole by the gateway's own HTTP/1.1 reader ([`crate::h1`]).
#[derive(Debug)]
pub(crate) enum IngressBody {
    /// hyper's body, read from the connection as it is polled.
    Streamed(hyper::body::Incoming),
    /// A body that arrived with its head; `None` once taken (or when there was none).
    Whole(Option<Bytes>),
}

impl Body for IngressBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            IngressBody::Streamed(body) => Pin::new(body).poll_frame(cx),
            IngressBody::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            IngressBody::Streamed(body) => body.is_end_stream(),
            IngressBody::Whole(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            IngressBody::Streamed(body) => body.size_hint(),
            IngressBody::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

impl IngressBody {
    /// A whole body; an empty one is no body at all.
    pub(crate) fn whole(bytes: Bytes) -> Self {
        IngressBody::Whole((!bytes.is_empty()).then_some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::overload::OverloadState;

    #[tokio::test]
    async fn a_held_body_counts_until_it_is_consumed() {
        let state = Arc::new(OverloadState::new(Some(64 << 20)));
        let body = held(Bytes::from_static(b"{\"ok\":true}"), state.hold(11));
        assert_eq!(state.held(), 11);
        assert_eq!(body.size_hint().exact(), Some(11));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"{\"ok\":true}");
        assert_eq!(state.held(), 0, "released once the body is done with");
    }
}
