//! The `bench.Echo` service on the Tideway side, the counterpart of `proto/echo.proto`.
//!
//! Payloads travel as MessagePack with `serde_bytes`, so a 1 KiB payload is one binary field,
//! as it is in protobuf.

use serde_bytes::ByteBuf;
use tideway_rpc::RpcError;

/// What the RPC benchmark calls.
#[tideway_macros::service(name = "bench.Echo")]
pub trait Echo {
    /// Returns the payload it was sent.
    async fn echo(&self, data: ByteBuf) -> Result<ByteBuf, RpcError>;

    /// Holds the call for `ms` milliseconds, then returns (memory-per-pending-call measurement).
    async fn sleep(&self, ms: u64) -> Result<(), RpcError>;
}

/// The implementation both benchmark servers share in spirit: echo, or sleep then answer.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, data: ByteBuf) -> Result<ByteBuf, RpcError> {
        Ok(data)
    }

    async fn sleep(&self, ms: u64) -> Result<(), RpcError> {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        Ok(())
    }
}
