use tideway_macros::service;
use tideway_rpc::RpcError;

#[service]
trait Echo {
    async fn say(&self, text: &str) -> Result<String, RpcError>;
    async fn last(&self, texts: Vec<String>) -> Result<&'static str, RpcError>;
    async fn any(&self, text: impl Into<String>) -> Result<String, RpcError>;
}

fn main() {}
