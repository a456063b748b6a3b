use tideway_macros::service;
use tideway_rpc::RpcError;

#[service]
trait Echo {
    async fn say(&self, text: String) -> Result<String, RpcError> {
        Ok(text)
    }
}

fn main() {}
