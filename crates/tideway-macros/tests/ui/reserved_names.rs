use tideway_macros::service;
use tideway_rpc::RpcError;

#[service]
trait Factory {
    async fn new(&self, name: String) -> Result<String, RpcError>;
    async fn with_options(&self, options: Vec<String>) -> Result<String, RpcError>;
}

fn main() {}
