use tideway_macros::service;
use tideway_rpc::RpcError;

#[service]
trait Echo {
    async fn say(&self, text: String) -> Result<String, RpcError>;
    async fn say(&self, text: String, loud: bool) -> Result<String, RpcError>;
}

fn main() {}
