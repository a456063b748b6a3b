use tideway_macros::service;
use tideway_rpc::RpcError;

#[service]
trait Echo {
    async fn say<T>(&self, text: T) -> Result<String, RpcError>;
    async fn shout(&self, text: String) -> Result<String, RpcError>
    where
        Self: Sized;
}

fn main() {}
