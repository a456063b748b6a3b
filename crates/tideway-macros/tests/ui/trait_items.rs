use tideway_macros::service;
use tideway_rpc::RpcError;

#[service]
trait Echo {
    const LOUD: bool;
    type Word;
    async fn say(&self, text: String) -> Result<String, RpcError>;
}

fn main() {}
