use tideway_macros::service;
use tideway_rpc::RpcError;

#[service]
trait Points {
    async fn add(&self, (x, y): (i32, i32)) -> Result<i32, RpcError>;
    async fn ignore(&self, _: u32) -> Result<(), RpcError>;
}

fn main() {}
